"""report.py: measurements as JSON-ready dicts and as text tables (NumPy only)."""

import json
import math

import numpy as np
import pytest

from keras_stiffness.app import report
from keras_stiffness.math.summarize import summarize


@pytest.fixture(scope="module")
def measurement():
    rng = np.random.default_rng(0)
    n, c = 30, 3
    labels = np.arange(n) % c
    is_val = np.arange(n) >= 20
    g1 = rng.normal(size=(n, 5)) + np.eye(c)[labels] @ rng.normal(size=(c, 5))
    g2 = rng.normal(size=(n, 4))
    layers = {"dense": g1 @ g1.T, "out": g2 @ g2.T}
    reps = {"input": rng.normal(size=(n, 6)), "dense": rng.normal(size=(n, 5))}
    return summarize(
        layers["dense"] + layers["out"],
        layers,
        labels,
        is_val,
        c,
        reps,
        bins=5,
        min_count=1,
        tags={"step": 7, "epoch": 1.5, "train_loss": 0.3},
    )


def test_measurement_to_dict_shape_and_values(measurement):
    m = measurement
    d = report.measurement_to_dict(m, ["a", "b", "c"])
    assert list(d["pair_sets"]) == ["train-train", "train-val", "val-val"]
    assert d["step"] == 7 and d["epoch"] == 1.5 and d["train_loss"] == 0.3
    assert d["val_loss"] is None and d["learning_rate"] is None  # NaN -> null
    for p, pair_set in enumerate(m.pair_sets):
        for k, measure in enumerate(m.measures):
            e = d["pair_sets"][pair_set][measure]
            assert set(e) >= {"class_matrix", "within", "between", "pairs"}
            np.testing.assert_allclose(np.array(e["class_matrix"], dtype=float), m.class_matrix[p, k])
            assert e["within"] == pytest.approx(m.within[p, k])
            assert e["between"] == pytest.approx(m.between[p, k])
            assert e["pairs"] == int(m.pairs[p])
            assert list(e["per_class"]) == ["a", "b", "c"]
    json.dumps(d, allow_nan=False)  # strictly valid JSON


def test_layers_merge_spaces_and_weight_layers(measurement):
    m = measurement
    layers = report.measurement_to_dict(m, ["a", "b", "c"])["layers"]
    assert [row["name"] for row in layers] == ["input", "dense", "out"]
    first, dense, out = layers
    assert first["stiffness_sign"] is None and first["stiffness_cos"] is None and not first["has_weights"]
    k = m.measures.index("sign")
    xi = m.critical_length[0, k]
    assert first["critical_length"] == (None if math.isnan(xi) else pytest.approx(xi))
    assert dense["stiffness_cos"] == pytest.approx(m.layer_mean[0, 0, m.measures.index("cos")])
    # "out" has weights but no representation space here: stiffness, no critical length.
    assert out["critical_length"] is None and out["stiffness_sign"] == pytest.approx(m.layer_mean[1, 0, k])


def test_clean_turns_numpy_and_nan_into_json_values():
    cleaned = report.clean(
        {"a": np.float32(np.nan), "b": np.arange(3), "c": (np.int64(2), np.inf), "d": np.bool_(True)}
    )
    assert cleaned == {"a": None, "b": [0, 1, 2], "c": [2, None], "d": True}


def test_text_tables_name_everything(measurement):
    d = report.measurement_to_dict(measurement, ["a", "b", "c"])
    result = {
        "model": {"name": "m", "class": "Sequential", "n_params": 1234, "loss": "sce"},
        "probes": {
            "source": "digits",
            "n_train": 20,
            "n_val": 10,
            "n_classes": 3,
            "seed": 0,
            "class_names": ["a", "b", "c"],
        },
        "measures": list(measurement.measures),
        "pair_sets": d["pair_sets"],
        "layers": d["layers"],
    }
    text = report.analysis_text(result)
    for needle in ("1,234", "train-val", "within sign", "dense", "step \\ effect"):
        assert needle in text
    run = {
        "path": "r.h5",
        "format_version": 1,
        "measures": list(measurement.measures),
        "pair_sets": list(measurement.pair_sets),
        "class_names": ["a", "b", "c"],
    }
    text = report.inspect_text(run, [d, d])
    assert "Measurements: 2" in text
    lines = text.splitlines()
    assert sum(line.split()[0] == "7" for line in lines if line.strip()) == 2


def test_fmt_dash_for_missing_values():
    assert report.fmt(None) == "-" and report.fmt(float("nan")) == "-"
    assert report.fmt(1234) == "1,234" and report.fmt(0.12345) == "0.123"
