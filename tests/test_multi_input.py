"""Models with several inputs (issue 10): x as a dict or list of arrays through the probe set, the
engine's checks, representations, the callback and ``kstiff analyze`` on an ``.npz`` with ``x_NAME``.

Exactness of every Gram method on two-input models is in ``test_engine_exactness.py`` (cases
``two_inputs_dict`` and ``two_inputs_list``).
"""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_stiffness import ProbeSet, StiffnessCallback, open_run
from keras_stiffness.cli.main import cli
from keras_stiffness.engine.api import check_probes, gradient_gram
from keras_stiffness.math.summarize import summarize
from keras_stiffness.measure.adapters import KerasAdapter

N_CLASSES = 3


def make_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    means_a, means_b = rng.normal(size=(N_CLASSES, 4)), rng.normal(size=(N_CLASSES, 2, 3))
    x = {
        "b": (means_b[y] + 0.5 * rng.normal(size=(n, 2, 3))).astype("float32"),
        "a": (means_a[y] + 0.5 * rng.normal(size=(n, 4))).astype("float32"),
    }
    return x, y


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    a = keras.Input((4,), name="a")
    b = keras.Input((2, 3), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(5, activation="tanh", name="da")(a), keras.layers.Flatten()(b)])
    out = keras.layers.Dense(N_CLASSES, activation="softmax", name="out")(h)
    model = keras.Model({"a": a, "b": b}, out, name="two_inputs")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def test_probe_set_slices_every_input_alike():
    x, y = make_data()
    xv, yv = make_data(60, seed=1)
    probes = ProbeSet(x, y, per_class=4, x_val=xv, y_val=yv, val_per_class=2, seed=3)
    assert list(probes.x) == ["a", "b"]  # sorted keys
    train = probes.indices[: probes.n_train]
    for k in ("a", "b"):
        np.testing.assert_array_equal(probes.x[k][: probes.n_train], x[k][train])
        np.testing.assert_array_equal(probes.x_val[k], xv[k][probes.indices[probes.n_train :]])
        assert probes.x[k].dtype == np.float32 and not probes.x[k].flags.writeable
        assert probes.x_train[k].shape[0] == probes.n_train
    assert probes.describe()["input_shape"] == {"a": [4], "b": [2, 3]}
    same = ProbeSet({"b": x["b"], "a": x["a"]}, y, per_class=4, x_val=xv, y_val=yv, val_per_class=2, seed=3)
    assert same.hash == probes.hash  # key order does not matter
    x2 = {"a": x["a"], "b": x["b"].copy()}
    x2["b"][probes.indices[0]] += 1.0
    other = ProbeSet(x2, y, per_class=4, x_val=xv, y_val=yv, val_per_class=2, seed=3)
    assert other.hash != probes.hash  # every input is hashed
    listed = ProbeSet([x["a"], x["b"]], y, per_class=4, seed=3)
    assert isinstance(listed.x, list) and len(listed.x) == 2


@pytest.mark.parametrize(
    "bad,error,needle",
    [
        (lambda x: {"a": x["a"], "b": x["b"][:-1]}, ValueError, "x['b'] with 119"),
        (lambda x: {"a": x["a"].astype(str), "b": x["b"]}, TypeError, "x['a'] of dtype"),
        (lambda x: {"a": np.where(np.arange(120)[:, None] == 7, np.nan, x["a"]), "b": x["b"]}, ValueError, "x['a']"),
    ],
)
def test_probe_set_checks_every_input(bad, error, needle):
    x, y = make_data()
    with pytest.raises(error, match=needle.replace("[", r"\[").replace("]", r"\]")):
        ProbeSet(bad(x), y, per_class=4)


def test_probe_set_needs_matching_inputs_for_val():
    x, y = make_data()
    with pytest.raises(ValueError, match="same feature shape"):
        ProbeSet(x, y, per_class=4, x_val={"a": x["a"], "b": x["b"][:, :1]}, y_val=y)


def test_engine_checks_every_leaf():
    x, y = make_data(6)
    with pytest.raises(ValueError, match=r"x\['b'\] with 5"):
        check_probes({"a": x["a"], "b": x["b"][:5]}, y)
    with pytest.raises(ValueError, match=r"x\[1\] with 6 NaN.*example 2"):
        check_probes([x["a"], np.where(np.arange(6)[:, None, None] == 2, np.nan, x["b"])], y)
    with pytest.raises(TypeError, match=r"x\['a'\] of dtype"):
        check_probes({"a": x["a"].astype(object), "b": x["b"]}, y)


def test_input_representation_concatenates_every_input():
    x, y = make_data(9)
    reps = KerasAdapter(make_model()).representations(x)
    expect = np.concatenate([x["a"].reshape(9, -1), x["b"].reshape(9, -1)], axis=1)
    np.testing.assert_array_equal(reps["input"], expect)
    assert reps["out"].shape == (9, N_CLASSES)


class WeightRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_begin(self, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_callback_on_a_two_input_model(tmp_path):
    x, y = make_data()
    xv, yv = make_data(60, seed=1)
    probes = ProbeSet(x, y, per_class=4, x_val=xv, y_val=yv, val_per_class=2, seed=0)
    model = make_model()
    path = tmp_path / "run.h5"
    rec = WeightRecorder()
    cb = StiffnessCallback(probes, str(path), bins=6, min_count=1)
    model.fit(x, y, validation_data=(xv, yv), epochs=2, batch_size=32, verbose=0, callbacks=[cb, rec])
    with open_run(str(path)) as run:
        assert len(run) == 3
        stored = [run.measurement(i) for i in range(len(run))]
    for m, weights in zip(stored, rec.weights):
        model.set_weights(weights)
        g = gradient_gram(model, probes.x, probes.y)
        expect = summarize(g.total, g.per_layer, probes.y, probes.is_val, probes.n_classes)
        np.testing.assert_allclose(m.class_matrix, expect.class_matrix, rtol=1e-6, atol=1e-9)


def test_analyze_on_an_npz_with_one_array_per_input(tmp_path):
    x, y = make_data()
    xv, yv = make_data(60, seed=1)
    data = tmp_path / "two.npz"
    np.savez(data, x_a=x["a"], x_b=x["b"], y=y, x_val_a=xv["a"], x_val_b=xv["b"], y_val=yv)
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0)
    model_path = str(tmp_path / "two.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(model_path)
    result = CliRunner().invoke(
        cli, ["analyze", model_path, "--data", str(data), "--format", "json", "--per-class", "4"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["probes"]["n_train"] == 12 and out["probes"]["n_val"] == 12
    assert out["layers"][0]["name"] == "input"
    assert {"da", "out"} <= {layer["name"] for layer in out["layers"]}


def test_npz_inputs_and_x_together_are_refused(tmp_path):
    from keras_stiffness.data.sources import load_data

    x, y = make_data(30)
    path = tmp_path / "both.npz"
    np.savez(path, x=x["a"], x_b=x["b"], y=y)
    with pytest.raises(ValueError, match="not both"):
        load_data(str(path))
    path = tmp_path / "half_val.npz"
    np.savez(path, x_a=x["a"], x_b=x["b"], y=y, x_val_a=x["a"], y_val=y)
    with pytest.raises(ValueError, match="together"):
        load_data(str(path))
    path = tmp_path / "ok.npz"
    np.savez(path, x_a=x["a"], x_b=x["b"], y=y)
    data = load_data(str(path), val_fraction=0.2)
    assert set(data.x_train) == {"a", "b"} and data.input_shape == {"a": (4,), "b": (2, 3)}
    assert len(data.x_train["b"]) == len(data.y_train) and len(data.x_val["a"]) == len(data.y_val)
    np.testing.assert_allclose(data.x_train["a"].mean(axis=0), 0, atol=1e-5)
