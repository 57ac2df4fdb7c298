"""summarize() fills every Measurement field; checked against a naive per-pair reference."""

import math
import warnings

import numpy as np
import pytest

from keras_stiffness.math.record import Measurement
from keras_stiffness.math.summarize import summarize


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def naive_stiffness(gram, i, j, measure):
    if gram[i, i] == 0 or gram[j, j] == 0:
        return 0.0
    c = gram[i, j] / math.sqrt(gram[i, i] * gram[j, j])
    return float(np.sign(c)) if measure == "sign" else c


def naive_pair_set(gram, labels, rows, cols, same, measure, n_classes):
    """(class matrix, counts, within, between, mean) from loops over the definitions."""
    total, count = np.zeros((n_classes, n_classes)), np.zeros((n_classes, n_classes), int)
    for i in rows:
        for j in cols:
            if i != j:
                total[labels[i], labels[j]] += naive_stiffness(gram, i, j, measure)
                count[labels[i], labels[j]] += 1
    with np.errstate(invalid="ignore"):
        matrix = total / count
    diag = [matrix[a, a] for a in range(n_classes) if count[a, a]]
    off = [matrix[a, b] for a in range(n_classes) for b in range(n_classes) if a != b and count[a, b]]
    mean = total.sum() / count.sum() if count.sum() else np.nan
    return matrix, count, np.mean(diag) if diag else np.nan, np.mean(off) if off else np.nan, mean


def naive_distance(x, i, j, metric):
    a, b = x[i].ravel().astype(float), x[j].ravel().astype(float)
    if metric == "euclidean":
        return np.linalg.norm(a - b)
    return 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_summarize_matches_naive_reference(metric):
    rng = np.random.default_rng(0)
    n, c, bins = 24, 3, 5
    labels = rng.integers(0, c, n)
    is_val = rng.random(n) < 0.35  # interleaved, not train-first
    g1, g2 = rng.normal(size=(n, 4)) + 0.3, rng.normal(size=(n, 3))
    layers = {"dense": g1 @ g1.T, "out": g2 @ g2.T}
    total = layers["dense"] + layers["out"]
    reps = {"input": rng.normal(size=(n, 2, 3)), "dense": np.maximum(rng.normal(size=(n, 6)), 0)}
    m = summarize(
        total, layers, labels, is_val, c, reps, metric=metric, bins=bins, min_count=1, tags={"step": 7, "epoch": 1.5}
    )
    assert isinstance(m, Measurement) and m.measures == ("sign", "cos") and m.layers == ("dense", "out")
    assert m.pair_sets == ("train-train", "train-val", "val-val") and m.spaces == ("input", "dense")
    train, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    sets = [(train, train, True), (train, val, False), (val, val, True)]
    for p, (rows, cols, same) in enumerate(sets):
        for k, measure in enumerate(m.measures):
            matrix, count, within, between, mean = naive_pair_set(total, labels, rows, cols, same, measure, c)
            np.testing.assert_allclose(m.class_matrix[p, k], matrix, atol=1e-12)
            np.testing.assert_array_equal(m.class_pairs[p], count)
            np.testing.assert_allclose(
                [m.within[p, k], m.between[p, k], m.mean[p, k]], [within, between, mean], atol=1e-12
            )
            for li, name in enumerate(m.layers):
                ref = naive_pair_set(layers[name], labels, rows, cols, same, measure, c)
                np.testing.assert_allclose(
                    [m.layer_within[li, p, k], m.layer_between[li, p, k], m.layer_mean[li, p, k]], ref[2:], atol=1e-12
                )
        assert m.pairs[p] == count.sum()
    for r, space in enumerate(m.spaces):
        edges = m.distance_edges[r]
        assert edges[0] == 0 and len(edges) == bins + 1
        pairs = [(i, j) for ii, i in enumerate(train) for j in train[ii + 1 :]]
        dist = np.array([naive_distance(reps[space], i, j, metric) for i, j in pairs])
        if metric == "euclidean":
            assert edges[-1] == pytest.approx(dist.max())
        else:
            assert edges[-1] == 2.0
        k_bin = np.minimum(np.searchsorted(edges, dist, side="right") - 1, bins - 1)
        np.testing.assert_array_equal(m.curve_count[r], np.bincount(k_bin, minlength=bins))
        for k, measure in enumerate(m.measures):
            s = np.array([naive_stiffness(total, i, j, measure) for i, j in pairs])
            with np.errstate(invalid="ignore"):
                ref = np.bincount(k_bin, s, minlength=bins) / np.bincount(k_bin, minlength=bins)
            np.testing.assert_allclose(m.curve_mean[r, k], ref, atol=1e-12)
            same_class = np.array([labels[i] == labels[j] for i, j in pairs])
            b, a = np.polyfit(dist[same_class], s[same_class], 1)
            inside = b < 0 and a > 0 and -a / b <= dist[same_class].max()
            expected = -a / b if inside else np.nan
            np.testing.assert_allclose(m.critical_length_fit[r, k], expected, rtol=1e-9)
    assert (m.step, m.epoch) == (7, 1.5) and np.isnan(m.train_loss) and m.gram is None


def test_critical_lengths_known_answer():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    gram = x @ x.T  # gradients equal to the inputs: cosine stiffness = 1 - cosine distance
    m = summarize(
        gram, {"only": gram}, rng.integers(0, 2, 200), np.zeros(200, bool), 2, {"input": x}, measures=("cos",), bins=40
    )
    assert m.critical_length_fit[0, 0] == pytest.approx(1.0, abs=1e-9)
    assert m.critical_length[0, 0] == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(m.layer_mean[0], m.mean)


def test_no_representations_and_no_val():
    gram = np.eye(4) + 0.1
    m = summarize(gram, {}, np.array([0, 1, 0, 1]), np.zeros(4, bool), 2, None, bins=6)
    assert m.pair_sets == ("train-train",) and m.spaces == () and m.layers == ()
    assert m.class_matrix.shape == (1, 2, 2, 2) and m.class_pairs.shape == (1, 2, 2)
    assert m.within.shape == m.between.shape == m.mean.shape == (1, 2) and m.pairs.tolist() == [12]
    assert m.layer_mean.shape == m.layer_within.shape == m.layer_between.shape == (0, 1, 2)
    assert m.distance_edges.shape == (0, 7) and m.curve_mean.shape == (0, 2, 6)
    assert m.curve_count.shape == (0, 6) and m.curve_count.dtype == np.int64
    assert m.critical_length.shape == m.critical_length_fit.shape == (0, 2)


def test_measures_are_put_in_canonical_order_and_validated():
    gram, labels, is_val = np.eye(3), np.array([0, 1, 1]), np.array([False, False, True])
    m = summarize(gram, {}, labels, is_val, 2, measures=("cos", "sign"))
    assert m.measures == ("sign", "cos")
    assert summarize(gram, {}, labels, is_val, 2, measures=("cos",)).within.shape == (3, 1)
    for bad in [("cos", "cos"), ("sign", "l1"), ()]:
        with pytest.raises(ValueError, match="Received: measures="):
            summarize(gram, {}, labels, is_val, 2, measures=bad)


def test_zero_gradient_and_saved_gram():
    g = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.2], [0.0, 1.0]])
    gram = g @ g.T
    m = summarize(
        gram,
        {"d": gram},
        np.array([0, 0, 0, 1]),
        np.array([False, False, True, True]),
        2,
        {"input": g},
        min_count=1,
        save_gram=True,
        tags={"train_loss": 0.3, "learning_rate": 1e-3, "wall_time": 2.0},
    )
    assert m.zero_grad == 1
    has_pairs = np.broadcast_to(m.class_pairs[:, None], m.class_matrix.shape) > 0
    assert np.isfinite(m.class_matrix[has_pairs]).all() and np.isnan(m.class_matrix[~has_pairs]).all()
    assert m.scalar("within", "train-train", "cos") == 0.0  # the only pair has a zero gradient
    np.testing.assert_array_equal(m.gram, gram)
    assert m.gram is not gram and m.gram.dtype == np.float64
    assert (m.step, m.train_loss, m.learning_rate, m.wall_time) == (0, 0.3, 1e-3, 2.0)
    assert np.isnan(m.epoch) and np.isnan(m.val_loss)


def test_paper_picture_within_plus_one_between_minus_one():
    rng = np.random.default_rng(3)
    labels = np.tile(np.arange(5), 12)
    g = np.eye(5)[labels] - 0.25 * (1 - np.eye(5)[labels]) + 0.05 * rng.normal(size=(60, 5))
    is_val = np.arange(60) % 4 == 0
    m = summarize(g @ g.T, {}, labels, is_val, 5, measures=("sign",))
    np.testing.assert_array_equal(m.within, 1.0)
    np.testing.assert_array_equal(m.between, -1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"per_layer": {"d": np.eye(3)}}, ValueError, r"per_layer\['d'\] with shape \(3, 3\); expected \(4, 4\)"),
        ({"representations": {"input": np.ones((3, 2))}}, ValueError, r"representations\['input'\] with shape"),
        ({"labels": np.array([0, 1, 0])}, ValueError, r"labels with shape \(3,\); expected \(4,\)"),
        ({"is_val": np.zeros(5, bool)}, ValueError, r"is_val with shape \(5,\); expected \(4,\)"),
        ({"is_val": np.zeros(4)}, TypeError, "expected a 1-D boolean"),
        ({"metric": "l1"}, ValueError, "Received: metric='l1'"),
        ({"bins": 0}, ValueError, "Received: bins=0"),
        ({"min_count": -1}, ValueError, "Received: min_count=-1"),
        ({"tags": {"stpe": 1}}, ValueError, r"tags with unknown keys \['stpe'\]"),
        ({"total": np.ones((4, 3))}, ValueError, r"total with shape \(4, 3\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    args = {
        "total": np.eye(4),
        "per_layer": {},
        "labels": np.array([0, 1, 0, 1]),
        "is_val": np.zeros(4, bool),
        "n_classes": 2,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        summarize(**args)
