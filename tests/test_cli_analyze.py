"""kstiff analyze: saved models of every kind, the JSON contract, --out, and clear errors on bad input."""

import json
import os
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from keras_stiffness.cli.main import cli
from tests import helpers_models as hm

FAST = ["--per-class", "5"]  # 50 training + 50 held-out probes keep each call to about a second


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Saved models by name: ``{"seq.keras": path, ...}``."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' "HDF5 is legacy" notices
        for name, build, suffixes in [
            ("seq", hm.sequential, (".keras", ".h5")),
            ("func", hm.functional, (".keras", ".h5")),
            ("sub", hm.subclassed, (".keras", ".h5")),
            ("lambda", hm.with_lambda, (".keras",)),
            ("custom", hm.with_unregistered_layer, (".keras", ".h5")),
            ("wrong", hm.wrong_input, (".keras",)),
            ("uncompiled", hm.uncompiled, (".keras",)),
        ]:
            model = build()
            for suffix in suffixes:
                path = str(root / f"{name}{suffix}")
                model.save(path)
                paths[f"{name}{suffix}"] = path
    return paths


def run(args, **kwargs):
    result = CliRunner().invoke(cli, ["analyze", *args], **kwargs)
    assert "Traceback" not in result.output
    return result


def assert_error(result, code, *needles):
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.stderr
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "name,extra",
    [
        ("seq.keras", []),
        ("seq.h5", []),
        ("func.keras", []),
        ("func.h5", []),
        ("sub.keras", ["--custom-objects", "tests.helpers_models:DigitsSubclassed"]),
    ],
)
def test_analyze_json_on_saved_models(models, name, extra):
    result = run([models[name], "--format", "json", *FAST, *extra])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # stdout carries only the JSON
    assert {"model", "probes", "pair_sets", "layers"} <= set(out)
    assert out["model"]["n_params"] > 0 and out["model"]["loss"]
    assert out["probes"]["n_train"] == 50 and out["probes"]["n_val"] == 50
    assert set(out["pair_sets"]) == {"train-train", "train-val", "val-val"}
    for measures in out["pair_sets"].values():
        for entry in measures.values():
            assert np.array(entry["class_matrix"], dtype=float).shape == (10, 10)
            assert {"within", "between", "pairs"} <= set(entry)
    tt = out["pair_sets"]["train-train"]
    assert tt["sign"]["within"] > 0.9 and tt["sign"]["pairs"] == 50 * 49
    layers = out["layers"]
    assert layers[0]["name"] == "input" and layers[0]["stiffness_sign"] is None
    weight_layers = [layer for layer in layers if layer["has_weights"]]
    assert weight_layers and all(layer["stiffness_cos"] is not None for layer in weight_layers)
    assert all("critical_length" in layer and "critical_length_fit" in layer for layer in layers)


def test_analyze_table_layers_and_out(models, tmp_path):
    out = tmp_path / "analysis.h5"
    result = run([models["func.keras"], *FAST, "--layers", "conv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for needle in ("Model: func (Functional)", "train-val", "xi sign", "conv", "Class matrix", str(out)):
        assert needle in result.stdout
    from keras_stiffness.store.reader import open_run

    with open_run(str(out)) as saved:
        assert len(saved) == 1 and saved.spaces == ("input", "conv")
        assert saved.config["analyze"]["data"] == "digits"
    # Existing output: a usage error unless --overwrite.
    assert_error(run([models["func.keras"], *FAST, "--out", str(out)]), 2, "--overwrite")
    assert run([models["func.keras"], *FAST, "--out", str(out), "--overwrite"]).exit_code == 0
    # And a run file is not a model.
    assert_error(run([str(out)]), 1, "run file", "kstiff inspect")


def test_json_stdout_is_clean_in_a_real_process(models):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "keras_stiffness.cli.main", "analyze", models["seq.keras"], "--format", "json", *FAST],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["model"]["name"] == "seq"


def test_lambda_needs_unsafe(models):
    assert_error(run([models["lambda.keras"], *FAST]), 1, "Lambda", "--unsafe")
    assert run([models["lambda.keras"], *FAST, "--unsafe"]).exit_code == 0


def test_subclassed_legacy_h5_is_explained(models):
    result = run([models["sub.h5"], *FAST, "--custom-objects", "tests.helpers_models:DigitsSubclassed"])
    assert_error(result, 1, "subclassed", "legacy .h5", ".keras")


@pytest.mark.parametrize("name", ["custom.keras", "custom.h5"])
def test_unregistered_custom_layer(models, name):
    assert_error(run([models[name], *FAST]), 1, "UnregisteredScale", "--custom-objects")


def test_custom_objects_resolve_the_layer(models):
    result = run([models["custom.keras"], *FAST, "--custom-objects", "tests.helpers_models:UnregisteredScale"])
    assert result.exit_code == 0, result.output


def test_bad_custom_objects_spec_is_usage_error(models):
    assert_error(run([models["seq.keras"], "--custom-objects", "no_colon"]), 2, "module:attr")
    assert_error(run([models["seq.keras"], "--custom-objects", "no_such_module_xyz:A"]), 2, "cannot be imported")
    assert_error(run([models["seq.keras"], "--custom-objects", "tests.helpers_models:Nope"]), 2, "no attribute")


def test_missing_file_is_usage_error(tmp_path):
    assert_error(run([str(tmp_path / "nope.keras")]), 2, "does not exist")


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("text.keras", b"not a model", "not a .keras archive"),
        ("text.h5", b"not a model", "not an HDF5 file"),
        ("model.txt", b"x", "expected a Keras model saved as '.keras'"),
    ],
)
def test_files_that_are_not_models(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    assert_error(run([str(path)]), 1, needle)


def test_truncated_files(models, tmp_path):
    for name in ("seq.h5", "seq.keras"):
        data = open(models[name], "rb").read()
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        assert_error(run([str(path)]), 1, repr(str(path)))


def test_hdf5_without_a_model(tmp_path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros(3)
    assert_error(run([str(path)]), 1, "without a Keras model")


def test_model_that_does_not_fit_the_data(models):
    assert_error(run([models["wrong.keras"], *FAST]), 1, "expects inputs of shape (28, 28, 1)", "gives (8, 8, 1)")


def _flat_and_image_twins(tmp_path, n_inputs=64):
    """The same net saved twice: on flat ``(n_inputs,)`` vectors, and on 8x8x1 images with a Flatten."""
    import keras

    keras.utils.set_random_seed(0)
    flat = keras.Sequential(
        [
            keras.Input((n_inputs,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="flat",
    )
    flat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    paths = {"flat": str(tmp_path / "flat.keras")}
    flat.save(paths["flat"])
    if n_inputs == 64:
        image = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(16, activation="relu", name="hidden"),
                keras.layers.Dense(10, activation="softmax", name="probs"),
            ],
            name="flat",
        )
        image.set_weights(flat.get_weights())
        image.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        paths["image"] = str(tmp_path / "image.keras")
        image.save(paths["image"])
    return paths


def test_flat_model_gets_the_data_reshaped_with_a_note(tmp_path):
    """A model on flat 64-vectors analyzes --data digits (8, 8, 1): inputs reshaped, a note on stderr.

    The result is that of the same weights behind a Flatten on 8x8x1 inputs (C-order reshaping, as
    Flatten does), so train, val and the probes drawn from them were all reshaped alike.
    """
    paths = _flat_and_image_twins(tmp_path)
    flat = run([paths["flat"], "--format", "json", *FAST])
    assert flat.exit_code == 0, flat.output
    note = "Note: reshaped the data's inputs (8, 8, 1) to the model's input shape (64) (same 64 values per example)."
    assert flat.stderr.splitlines() == [note]
    out = json.loads(flat.stdout)  # stdout carries only the JSON
    assert out["model"]["input_shape"] == [64]
    assert out["probes"]["n_train"] == 50 and out["probes"]["n_val"] == 50
    image = run([paths["image"], "--format", "json", *FAST])
    assert image.exit_code == 0, image.output
    assert "Note:" not in image.stderr
    twin = json.loads(image.stdout)
    assert out["probes"]["n"] == twin["probes"]["n"]
    for pair_set, measures in out["pair_sets"].items():
        for measure, entry in measures.items():
            np.testing.assert_allclose(
                np.array(entry["class_matrix"], dtype=float),
                np.array(twin["pair_sets"][pair_set][measure]["class_matrix"], dtype=float),
                atol=1e-5,
            )
    by_name = {layer["name"]: layer for layer in twin["layers"]}
    for layer in out["layers"]:
        if layer["name"] in ("hidden", "probs"):
            assert layer["stiffness_cos"] == pytest.approx(by_name[layer["name"]]["stiffness_cos"], abs=1e-5)
    # The table form prints the same note on stderr, and its results on stdout.
    table = run([paths["flat"], *FAST])
    assert table.exit_code == 0 and table.stderr.splitlines() == [note] and "Model: flat" in table.stdout


def test_flat_model_with_another_count_is_refused(tmp_path):
    paths = _flat_and_image_twins(tmp_path, n_inputs=63)
    result = run([paths["flat"], *FAST])
    assert_error(result, 1, "Model 'flat' expects inputs of shape (63), but data 'digits' gives (8, 8, 1).")
    assert "Note:" not in result.stderr


@pytest.mark.parametrize("preset, shape", [("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_analyze_on_a_preset_mocked(tmp_path, preset, shape):
    """``--data PRESET`` reads the prepared TFDS set from --data-dir (mocked here: 40 examples a split)."""
    import keras

    tfds = pytest.importorskip("tensorflow_datasets")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax", name="probs")],
        name="small",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "small.keras")
    model.save(path)
    with tfds.testing.mock_data(num_examples=40):
        result = run([path, "--data", preset, "--data-dir", str(tmp_path), "--per-class", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["probes"]["source"] == preset and out["probes"]["n_classes"] == 10
    assert out["model"]["input_shape"] == list(shape)
    assert 0 < out["probes"]["n_train"] <= 20 and 0 < out["probes"]["n_val"] <= 20


def test_uncompiled_model_needs_loss(models):
    assert_error(run([models["uncompiled.keras"], *FAST]), 1, "--loss")
    result = run([models["uncompiled.keras"], *FAST, "--loss", "sparse_categorical_crossentropy"])
    assert result.exit_code == 0, result.output


def test_unknown_layer_is_usage_error(models):
    assert_error(run([models["seq.keras"], *FAST, "--layers", "hidden,nope"]), 2, "--layers", "nope")


def test_data_errors(models, tmp_path):
    assert_error(run([models["seq.keras"], "--data", "nosuch"]), 2, "tfds:nosuch")
    empty = tmp_path / "tfds_empty"
    empty.mkdir()
    assert_error(
        run([models["seq.keras"], "--data", "tfds:mnist", "--data-dir", str(empty)]),
        1,
        "not prepared",
        "never downloads",
    )
    npz = tmp_path / "bad.npz"
    np.savez(npz, a=np.zeros((4, 8, 8, 1)))
    assert_error(run([models["seq.keras"], "--data", str(npz)]), 1, "expected arrays 'x' and 'y'")
