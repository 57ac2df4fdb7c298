"""kstiff analyze with one-hot labels (categorical_crossentropy) and with regression targets (--targets
regression): the recorded values against gradient_gram + summarize, and the Gram against the naive loop."""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_stiffness import ProbeSet, open_run
from keras_stiffness.cli.main import cli
from keras_stiffness.data.sources import load_data
from keras_stiffness.engine.api import gradient_gram
from keras_stiffness.math.summarize import summarize
from tests.reference import reference_gram

D, C, K = 8, 3, 2  # input features, classes, regression outputs


def _x(n, seed):
    return np.random.default_rng(seed).normal(size=(n, D)).astype("float32")


def _save(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return str(path)


def _analyze(args):
    result = CliRunner().invoke(cli, ["analyze", *args])
    assert "Traceback" not in result.output
    return result


def _cos(gram):
    norms = np.sqrt(np.diag(gram))
    return gram / np.outer(norms, norms)


@pytest.fixture()
def onehot_files(tmp_path):
    x, xv = _x(60, 0), _x(30, 1)
    y, yv = np.arange(60) % C, np.arange(30) % C
    data = tmp_path / "onehot.npz"
    np.savez(data, x=x, y=keras.utils.to_categorical(y, C), x_val=xv, y_val=keras.utils.to_categorical(yv, C))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(C, activation="softmax")]
    )
    model.compile(keras.optimizers.SGD(1e-2), "categorical_crossentropy")
    return _save(model, tmp_path / "cce.keras"), str(data)


def test_load_data_keeps_one_hot_rows(onehot_files):
    _, data_path = onehot_files
    data = load_data(data_path, seed=0)
    assert data.n_classes == C and data.target_kind == "classes"
    assert data.targets_train.shape == (60, C) and data.targets_val.shape == (30, C)
    np.testing.assert_array_equal(data.targets_train.argmax(1), data.y_train)
    carved = load_data(data_path, seed=0, val_fraction=0.2, max_train=20)  # held-out given: only max_train
    np.testing.assert_array_equal(carved.targets_train.argmax(1), carved.y_train)
    assert len(carved.targets_train) == len(carved.y_train) == 20


def test_analyze_one_hot_with_categorical_crossentropy(onehot_files, tmp_path):
    model_path, data_path = onehot_files
    run_path = tmp_path / "run.h5"
    result = _analyze([model_path, "--data", data_path, "--format", "json", "--per-class", "5", "--out", str(run_path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["probes"]["labels"] == "one-hot" and out["probes"]["n_train"] == 5 * C

    # The same probes, rebuilt independently from the loaded (standardized) data with the same seed.
    data = load_data(data_path, seed=0)
    probes = ProbeSet(data.x_train, data.targets_train, per_class=5, x_val=data.x_val, y_val=data.targets_val, seed=0)
    assert probes.label_kind == "one-hot" and probes.hash == out["probes"]["hash"]
    model = keras.saving.load_model(model_path)
    gram = gradient_gram(model, probes.x, probes.targets).total
    expected = summarize(gram, {}, probes.y, probes.is_val, probes.n_classes, None, measures=("sign", "cos"))
    with open_run(str(run_path)) as run:
        assert run.config["probes"]["labels"] == "one-hot"
        stored = run.measurement(0)
        np.testing.assert_allclose(stored.class_matrix, expected.class_matrix, atol=1e-5)
        pair_sets, measures = list(run.pair_sets), list(run.measures)
    for p, pair_set in enumerate(pair_sets):
        for k, measure in enumerate(measures):
            recorded = np.array(out["pair_sets"][pair_set][measure]["class_matrix"], dtype=float)
            np.testing.assert_allclose(recorded, expected.class_matrix[p, k], atol=1e-5)
    # The Gram against the naive per-example loop (the loss sees the one-hot rows).
    pick = [0, 1, len(probes) - 1]
    naive = reference_gram(model, probes.x[pick], probes.targets[pick]).total
    np.testing.assert_allclose(gram[np.ix_(pick, pick)], naive, rtol=1e-4, atol=1e-7)


def test_analyze_one_hot_width_must_match_outputs(onehot_files, tmp_path):
    _, data_path = onehot_files
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(C + 1, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    result = _analyze([_save(model, tmp_path / "wide.keras"), "--data", data_path, "--per-class", "5"])
    assert result.exit_code == 1 and "one output per column" in result.output


@pytest.fixture()
def regression_files(tmp_path):
    w = np.random.default_rng(9).normal(size=(D, K))
    x, xv = _x(80, 0), _x(30, 1)
    y, yv = (x @ w).astype("float32") + 3.0, (xv @ w).astype("float32") + 3.0
    data = tmp_path / "reg.npz"
    np.savez(data, x=x, y=y, x_val=xv, y_val=yv)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(K)])
    model.compile(keras.optimizers.SGD(1e-2), "mse")
    return _save(model, tmp_path / "reg.keras"), str(data), y


def test_load_data_regression_keeps_targets_unchanged(regression_files):
    _, data_path, y = regression_files
    data = load_data(data_path, seed=0, targets="regression")
    assert (data.target_kind, data.n_classes, data.class_names) == ("regression", 0, [])
    np.testing.assert_array_equal(data.targets_train, y)  # not standardized, no class check
    assert (data.y_train == -1).all()
    carved = load_data(data_path, seed=0, targets="regression", max_train=50)
    assert carved.targets_train.shape == (50, K)
    with pytest.raises(ValueError, match="targets='regression'"):
        load_data(data_path)  # float targets are not class labels
    with pytest.raises(ValueError, match="'.npz' file"):
        load_data("digits", targets="regression")


def test_analyze_regression(regression_files, tmp_path):
    model_path, data_path, _ = regression_files
    run_path = tmp_path / "run.h5"
    args = [model_path, "--data", data_path, "--targets", "regression", "--probes", "12"]
    result = _analyze([*args, "--format", "json", "--out", str(run_path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["probes"]["labels"] == "regression" and out["probes"]["n_classes"] == 0
    assert (out["probes"]["n_train"], out["probes"]["n_val"]) == (12, 12)

    data = load_data(data_path, seed=0, targets="regression")
    probes = ProbeSet(
        data.x_train, data.targets_train, n=12, x_val=data.x_val, y_val=data.targets_val, seed=0, targets="regression"
    )
    assert probes.hash == out["probes"]["hash"]
    model = keras.saving.load_model(model_path)
    gram = gradient_gram(model, probes.x, probes.targets).total
    cos = _cos(gram)[:12, :12]
    direct = cos[~np.eye(12, dtype=bool)].mean()  # train-train, all pairs i != j
    tt = out["pair_sets"]["train-train"]["cos"]
    assert tt["within"] is None and tt["between"] is None
    np.testing.assert_allclose(tt["mean"], direct, atol=1e-5)
    with open_run(str(run_path)) as run:
        assert run.config["probes"]["labels"] == "regression" and run.config["analyze"]["targets"] == "regression"
        stored = run.measurement(0)
        p, k = list(run.pair_sets).index("train-train"), list(run.measures).index("cos")
        np.testing.assert_allclose(stored.mean[p, k], direct, atol=1e-5)
    pick = [0, 5, 20]
    naive = reference_gram(model, probes.x[pick], probes.targets[pick]).total
    np.testing.assert_allclose(gram[np.ix_(pick, pick)], naive, rtol=1e-4, atol=1e-7)
    # The table says there are no classes.
    table = _analyze(args)
    assert table.exit_code == 0, table.output
    assert "no classes" in table.stdout


def test_analyze_regression_errors(regression_files, tmp_path):
    model_path, data_path, _ = regression_files
    result = _analyze([model_path, "--data", data_path, "--probes", "5"])
    assert result.exit_code == 2 and "--probes" in result.output
    result = _analyze([model_path, "--data", "digits", "--targets", "regression"])
    assert result.exit_code == 2 and ".npz" in result.output
    result = _analyze([model_path, "--data", data_path, "--targets", "regression", "--val-per-class", "3"])
    assert result.exit_code == 2 and "--val-per-class" in result.output
    wrong = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K + 1)])
    wrong.compile("sgd", "mse")
    result = _analyze([_save(wrong, tmp_path / "wrong.keras"), "--data", data_path, "--targets", "regression"])
    assert result.exit_code == 1 and "regression targets of shape" in result.output
