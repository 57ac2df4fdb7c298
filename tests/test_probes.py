"""Tests of keras_stiffness.data.probes.ProbeSet: selection, order, warnings, hash, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_stiffness.data.probes import ProbeSet
from keras_stiffness.data.sources import load_data


def _data(n=120, n_classes=4, shape=(3, 2), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    y = rng.permutation(np.arange(n) % n_classes)
    return x, y


def test_stratified_counts_order_and_rows():
    x, y = _data()
    xv, yv = _data(60, seed=1)
    p = ProbeSet(x, y, per_class=5, x_val=xv, y_val=yv, val_per_class=3, seed=0)
    assert (p.n_train, p.n_val, p.n, len(p), p.n_classes, p.has_val) == (20, 12, 32, 32, 4, True)
    assert p.counts["train"].tolist() == [5] * 4 and p.counts["val"].tolist() == [3] * 4
    assert p.x.dtype == np.float32 and p.y.dtype == np.int64 and p.indices.dtype == np.int64
    assert p.is_val.tolist() == [False] * 20 + [True] * 12
    for part, src_x, src_y in ((~p.is_val, x, y), (p.is_val, xv, yv)):
        ys, idx = p.y[part], p.indices[part]
        assert np.all(np.diff(ys) >= 0)  # by class
        for c in range(4):  # then by source index
            assert np.all(np.diff(idx[ys == c]) > 0)
        assert np.array_equal(p.x[part], src_x[idx]) and np.array_equal(ys, src_y[idx])
    assert np.array_equal(p.x_train, p.x[:20]) and np.array_equal(p.y_val, p.y[20:])
    assert p.class_names == ["0", "1", "2", "3"] and p.short_classes == []


def test_seeded_selection():
    x, y = _data()
    a, b, c = (ProbeSet(x, y, per_class=5, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.indices, b.indices) and a.hash == b.hash
    assert not np.array_equal(a.indices, c.indices) and a.hash != c.hash
    # Adding a held-out part does not change the training probes.
    d = ProbeSet(x, y, per_class=5, x_val=x[:40], y_val=y[:40], seed=3)
    assert np.array_equal(d.indices[~d.is_val], a.indices)


def test_short_and_empty_classes_are_kept_and_reported():
    x, y = _data(40, n_classes=3)
    y = np.where(y == 2, 0, y)
    y[7] = 2  # class 2 has a single example; class 3 (via n_classes) has none
    with pytest.warns(
        UserWarning,
        match=r"class 2 \('c'\): 1 available, 5 asked; "
        r"class 3 \('d'\): 0 available, 5 asked.*Classes \[2, 3\] have fewer than "
        r"2 probes.*NaN",
    ):
        p = ProbeSet(x, y, per_class=5, class_names=["a", "b", "c", "d"])
    assert p.n_classes == 4 and p.counts["train"].tolist() == [5, 5, 1, 0]
    assert p.short_classes == [("train", 2, 1, 5), ("train", 3, 0, 5)]
    summary = p.describe()
    assert summary["short_classes"][1] == {"split": "train", "class": 3, "name": "d", "available": 0, "asked": 5}


def test_hash_stable_and_sensitive():
    x, y = _data()
    p = ProbeSet(x, y, per_class=5)
    assert p.hash == ProbeSet(x.copy(), y.copy(), per_class=5).hash and len(p.hash) == 64
    x2 = x.copy()
    x2[p.indices[3], 1, 0] += 1e-3
    assert ProbeSet(x2, y, per_class=5).hash != p.hash
    unused = np.setdiff1d(np.arange(len(x)), p.indices)[0]
    x3 = x.copy()
    x3[unused] = 9.0
    assert ProbeSet(x3, y, per_class=5).hash == p.hash  # only the probes matter


def test_no_references_no_mutation_read_only():
    x, y = _data()
    x_before, y_before = x.copy(), y.copy()
    p = ProbeSet(x, y, per_class=5)
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)
    assert not np.shares_memory(p.x, x) and not np.shares_memory(p.y, y)
    x[:] = 0.0
    assert np.any(p.x != 0.0)
    with pytest.raises(ValueError):
        p.x[0] = 1.0


def test_n_classes_and_one_hot():
    x, y = _data(60, n_classes=3)
    one_hot = ProbeSet(x, np.eye(3)[y], per_class=2)
    assert one_hot.hash == ProbeSet(x, y, per_class=2).hash
    assert ProbeSet(x, y[:, None], per_class=2).n_classes == 3
    with pytest.warns(UserWarning, match="class 4"):
        assert ProbeSet(x, y, per_class=2, n_classes=5).class_names == ["0", "1", "2", "3", "4"]


def test_summary_is_json():
    x, y = _data()
    p = ProbeSet(x, y, per_class=5, x_val=x[:40], y_val=y[:40], seed=7)
    s = json.loads(json.dumps(p.describe()))
    assert s["n_train"] == 20 and s["n_val"] == 20 and s["seed"] == 7 and s["per_class"] == 5
    assert s["counts"] == {"train": [5] * 4, "val": [5] * 4} and s["hash"] == p.hash
    assert s["input_shape"] == [3, 2] and s["source"] is None


X, Y = _data(40)
BAD_INPUTS = [
    (dict(x=X, y=Y[:-1]), ValueError, r"40 examples in x but 39 labels in y"),
    (dict(x=X, y=Y + 0.5), ValueError, r"non-integer values"),
    (dict(x=X, y=Y - 1), ValueError, r"1 label\(s\) outside|label\(s\) outside \[0, 3\)"),
    (dict(x=X, y=Y, n_classes=3), ValueError, r"outside \[0, 3\).*n_classes=3"),
    (
        dict(x=np.where(np.arange(40)[:, None, None] == 3, np.nan, X), y=Y),
        ValueError,
        r"6 non-finite values \(NaN or Inf\) in 1 example\(s\), the first at x\[3\]",
    ),
    (
        dict(x=np.zeros((0, 3)), y=np.zeros(0, int)),
        ValueError,
        r"x of shape \(0, 3\); expected a "
        r"non-empty",
    ),
    (dict(x=X, y=Y, per_class=0), ValueError, r"per_class=0; expected a positive integer"),
    (dict(x=X, y=Y, per_class="5"), TypeError, r"per_class='5'"),
    (dict(x=X, y=Y, val_per_class=0), ValueError, r"val_per_class=0"),
    (dict(x=X, y=Y, x_val=X), ValueError, r"x_val without y_val; expected both or neither"),
    (dict(x=X, y=Y, y_val=Y), ValueError, r"y_val without x_val"),
    (
        dict(x=X, y=Y, x_val=X[:, :2], y_val=Y),
        ValueError,
        r"x of shape \(40, 3, 2\) and x_val of "
        r"shape \(40, 2, 2\)",
    ),
    (dict(x=X[:1], y=Y[:1], per_class=1), ValueError, r"1 probe\(s\) in total .*at least 2"),
    (dict(x=X, y=Y, n_classes=5, class_names=["a"]), ValueError, r"n_classes=5 and 1 class_names"),
    (dict(x=X, y=Y, class_names="abcd"), TypeError, r"class_names='abcd'"),
    (dict(x=X.astype(str), y=Y), TypeError, r"x of dtype <U"),
    (dict(x=X, y=np.array(["a"] * 40)), TypeError, r"y of dtype <U1"),
    (dict(x=X, y=Y, seed=-2), ValueError, r"seed=-2"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD_INPUTS)
def test_bad_inputs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ProbeSet(**kwargs)


# ------------------------------------------------------------------------------------------------
# from_dataset, from_source
# ------------------------------------------------------------------------------------------------


def test_from_dataset_batched_and_unbatched():
    tf = pytest.importorskip("tensorflow")
    x, y = _data(90, n_classes=3, shape=(4, 2))  # leading size 4 != 3 classes: one-hot unambiguous
    xv, yv = _data(30, n_classes=3, shape=(4, 2), seed=1)
    ref = ProbeSet(x, y, per_class=4, x_val=xv, y_val=yv, seed=1)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    val = tf.data.Dataset.from_tensor_slices((xv, yv))
    variants = [
        (unbatched, val),
        (unbatched.batch(7), val.batch(16)),
        (tf.data.Dataset.from_tensor_slices((x, np.eye(3, dtype="float32")[y])), val),
        (tf.data.Dataset.from_tensor_slices((x, np.eye(3)[y], np.ones(90))).batch(5), val),
    ]
    for ds, vds in variants:
        p = ProbeSet.from_dataset(ds, per_class=4, val_dataset=vds, seed=1)
        assert p.hash == ref.hash


def test_from_dataset_cap_and_errors():
    tf = pytest.importorskip("tensorflow")
    x, y = _data(90, n_classes=3)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.warns(UserWarning, match="read only the first 30 examples of dataset"):
        p = ProbeSet.from_dataset(ds.batch(8), per_class=2, max_examples=30)
    assert p.indices.max() < 30
    with pytest.raises(TypeError, match="expected a tf.data.Dataset"):
        ProbeSet.from_dataset((x, y))
    with pytest.raises(TypeError, match=r"expected \(x, y\) or \(x, y, sample_weight\)"):
        ProbeSet.from_dataset(tf.data.Dataset.from_tensor_slices({"image": x, "label": y}))
    with pytest.raises(ValueError, match="max_examples=1"):
        ProbeSet.from_dataset(ds, max_examples=1)
    with pytest.raises(ValueError, match="an empty dataset"):
        ProbeSet.from_dataset(ds.take(0))


def test_from_source_digits():
    p = ProbeSet.from_source("digits", per_class=20, seed=0)
    assert p.x.shape == (400, 8, 8, 1) and (p.n_train, p.n_val) == (200, 200)
    assert p.source == "digits" and p.describe()["source"] == "digits"
    assert p.class_names == [str(i) for i in range(10)]
    assert abs(float(p.x_train.mean())) < 0.15 and abs(float(p.x_train.std()) - 1.0) < 0.15
    data = load_data("digits", seed=0)
    assert np.array_equal(p.x_train, data.x_train[p.indices[: p.n_train]])
    assert np.array_equal(p.x_val, data.x_val[p.indices[p.n_train :]])


def test_soft_labels_kept_for_the_loss_and_multi_label_refused():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype("float32")
    soft = rng.dirichlet(np.ones(3), size=30)
    p = ProbeSet(x, soft, per_class=3)
    assert p.label_kind == "soft" and p.targets.shape == (len(p), 3)
    np.testing.assert_array_equal(p.y, np.argmax(p.targets, axis=1))
    ids = ProbeSet(x, np.argmax(soft, axis=1), per_class=3)
    assert ids.label_kind == "class ids" and ids.hash != p.hash  # soft targets are part of the identity
    multi = np.zeros((30, 3))
    multi[:, 0] = 1
    multi[5, 2] = 1
    with pytest.raises(ValueError, match=r"multi-label y \(row 5 has 2 ones\)"):
        ProbeSet(x, multi, per_class=3)
    with pytest.raises(ValueError, match=r"row 0 sums to 2"):
        ProbeSet(x, soft * 2, per_class=3)
