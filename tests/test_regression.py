"""Regression (non-class) targets: random probes, no class matrices, and everything downstream still works."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_stiffness import ProbeSet, StiffnessCallback, open_run
from keras_stiffness.cli.main import cli
from keras_stiffness.engine.api import gradient_gram
from keras_stiffness.math.stiffness import cosine_stiffness
from keras_stiffness.plots import run_figures

D, K = 6, 3


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype("float32")
    w = np.random.default_rng(99).normal(size=(D, K))
    y = (x @ w + 0.1 * rng.normal(size=(n, K))).astype("float32")
    return x, y


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(K)])
    model.compile(keras.optimizers.SGD(1e-2), "mse")
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    x, y = make_data(120, 0)
    xv, yv = make_data(40, 1)
    probes = ProbeSet(x, y, n=12, x_val=xv, y_val=yv, val_n=8, seed=0, targets="regression")
    model = make_model()
    path = tmp_path_factory.mktemp("reg") / "run.h5"
    cb = StiffnessCallback(probes, str(path), bins=6, min_count=2)
    hist = model.fit(x, y, validation_data=(xv, yv), epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    return probes, model, path, cb, hist


def test_probe_set_regression_api():
    x, y = make_data(50, 0)
    p = ProbeSet(x, y, n=10, seed=3, targets="regression")
    assert (p.n_train, p.n_val, p.n_classes, p.has_classes, p.label_kind) == (10, 0, 0, False, "regression")
    assert p.y.tolist() == [-1] * 10 and p.class_names == [] and p.counts["train"].shape == (0,)
    np.testing.assert_array_equal(p.targets, y[p.indices])
    assert np.all(np.diff(p.indices) > 0)
    assert ProbeSet(x, y, n=10, seed=3, targets="regression").hash == p.hash
    assert ProbeSet(x, y + 1, n=10, seed=3, targets="regression").hash != p.hash  # targets are hashed
    json.dumps(p.describe())
    # float targets never silently become classes
    with pytest.raises(ValueError, match="targets='regression'"):
        ProbeSet(x, y[:, 0], per_class=3)
    with pytest.raises(ValueError, match="targets='regression'"):
        ProbeSet(x, y, per_class=3)
    with pytest.raises(ValueError, match="without n"):
        ProbeSet(x, y, targets="regression")
    with pytest.raises(ValueError, match="n/val_n"):
        ProbeSet(x, np.arange(50) % 2, n=5)
    with pytest.raises(ValueError, match="expected 'classes' or 'regression'"):
        ProbeSet(x, y, n=5, targets="auto")
    with pytest.warns(UserWarning, match="fewer than the 80 asked"):
        assert ProbeSet(x, y, n=80, targets="regression").n_train == 50


def test_callback_values_match_gradient_gram(run):
    probes, model, path, cb, hist = run
    assert probes.n_train == 12 and probes.n_val == 8
    for name in ("stiffness_mean_cos", "stiffness_mean_sign", "stiffness_train_val_mean_cos"):
        assert len(hist.history[name]) == 2
    assert not any("within" in k or "between" in k for k in hist.history)
    m = cb.measurements[-1]
    assert m.class_matrix.shape == (3, 2, 0, 0) and m.class_pairs.shape == (3, 0, 0)
    assert np.isnan(m.within).all() and np.isnan(m.between).all() and np.isnan(m.layer_within).all()
    assert np.isnan(m.critical_length_fit).all()
    assert np.isfinite(m.mean).all() and np.isfinite(m.layer_mean).all()
    g = gradient_gram(model, probes.x, probes.targets).total
    train = ~probes.is_val
    s, _ = cosine_stiffness(g[np.ix_(train, train)])
    off = ~np.eye(probes.n_train, dtype=bool)
    assert m.scalar("mean", "train-train", "cos") == pytest.approx(s[off].mean(), abs=1e-5)
    assert hist.history["stiffness_mean_cos"][-1] == pytest.approx(s[off].mean(), abs=1e-5)
    sv, _ = cosine_stiffness(g)
    assert m.scalar("mean", "train-val", "cos") == pytest.approx(sv[np.ix_(train, ~train)].mean(), abs=1e-5)
    assert m.pairs.tolist() == [12 * 11, 12 * 8, 8 * 7]
    assert m.curve_count.sum(axis=1).tolist() == [12 * 11 // 2] * len(m.spaces)
    with open_run(str(path)) as r:
        assert len(r) == 3 and list(r.class_names) == []
        stored = r.measurement(len(r) - 1)
        assert stored.class_matrix.shape == (3, 2, 0, 0)
        np.testing.assert_allclose(stored.mean, m.mean)
        np.testing.assert_allclose(stored.curve_mean, m.curve_mean)


def test_figures_and_inspect(run, tmp_path):
    _, _, path, _, _ = run
    paths = run_figures.plot_run(str(path), tmp_path)
    assert [p.name for p in paths] == [f"{s}.png" for s in run_figures.FILES]
    text = CliRunner().invoke(cli, ["inspect", str(path)])
    assert text.exit_code == 0, text.output
    assert "no classes" in text.output
    out = CliRunner().invoke(cli, ["inspect", str(path), "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["run"]["class_names"] == [] and "no classes" in data["run"]["classes"]
    last = data["measurements"][-1]["pair_sets"]["train-train"]["cos"]
    assert last["class_matrix"] == [] and last["within"] is None and last["between"] is None
    assert math.isfinite(last["mean"]) and last["pairs"] == 12 * 11
