"""Tests of keras_stiffness.data.sources: sources, splits, standardization, labels and error messages."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from keras_stiffness.data.sources import load_data, parse_source, standardize
from keras_stiffness.data.tfds import DataNotFoundError
from keras_stiffness.validation import check_labels as normalize_labels


def test_import_is_light():
    code = (
        "import sys, keras_stiffness.data.sources, keras_stiffness.data.probes; "
        "heavy = [m for m in ('tensorflow', 'tensorflow_datasets', 'keras', 'sklearn') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# parse_source
# ------------------------------------------------------------------------------------------------

GOOD_SOURCES = [
    ("digits", ("digits", "digits", None)),
    ("tfds:mnist", ("tfds", "mnist", "train")),
    ("tfds:cifar10:test", ("tfds", "cifar10", "test")),
    ("tfds:cifar10:train[:10%]", ("tfds", "cifar10", "train[:10%]")),
    ("tfds:cifar10_corrupted/brightness_1", ("tfds", "cifar10_corrupted/brightness_1", "train")),
    ("some/dir/file.NPZ", ("npz", "some/dir/file.NPZ", None)),
    ("mnist", ("preset", "mnist", None)),
    ("fashion_mnist", ("preset", "fashion_mnist", None)),
    ("cifar10", ("preset", "cifar10", None)),
    ("cifar100", ("preset", "cifar100", None)),
]

BAD_SOURCES = [
    ("emnist", ValueError, "tfds:emnist"),
    ("svhn_cropped", ValueError, "tfds:svhn_cropped"),
    ("cifar10:test", ValueError, r"preset 'cifar10' without a split.*'tfds:cifar10:test'"),
    ("mnist:train[:10%]", ValueError, r"'tfds:mnist:train\[:10%\]'"),
    ("tfds:", ValueError, "dataset name ''"),
    ("tfds:mnist:", ValueError, "empty split"),
    ("tfds:mn ist", ValueError, "TFDS builder name"),
    ("data.csv", ValueError, r"expected 'digits', 'tfds:NAME\[:SPLIT\]'"),
    (3, TypeError, "expected a string"),
]


@pytest.mark.parametrize("source, expected", GOOD_SOURCES)
def test_parse_source(source, expected):
    assert parse_source(source) == expected


@pytest.mark.parametrize("source, exc, match", BAD_SOURCES)
def test_parse_source_errors(source, exc, match):
    with pytest.raises(exc, match=match):
        parse_source(source)


# ------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------


def test_digits_split_sizes_and_stratification():
    from sklearn.datasets import load_digits

    data = load_data("digits", seed=0)
    assert data.name == "digits"
    assert data.x_train.shape == (1438, 8, 8, 1) and data.x_val.shape == (359, 8, 8, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.input_shape == (8, 8, 1) and data.n_classes == 10
    assert data.class_names == [str(i) for i in range(10)]
    full = np.bincount(load_digits().target, minlength=10)
    val = np.bincount(data.y_val, minlength=10)
    assert np.all(np.abs(val - 0.2 * full) <= 1)
    assert np.array_equal(val + np.bincount(data.y_train, minlength=10), full)


def test_digits_standardized_with_train_statistics():
    data = load_data("digits", seed=0)
    assert abs(float(data.x_train.mean(dtype=np.float64))) < 1e-5
    assert abs(float(data.x_train.std(dtype=np.float64)) - 1.0) < 1e-5
    # Raw pixels are the integers 0..16, so the two smallest standardized train values give the
    # train statistics; the val part, standardized with them, maps back to integers 0..16.
    u = np.unique(data.x_train.astype(np.float64))
    std = 1.0 / (u[1] - u[0])
    raw_val = data.x_val.astype(np.float64) * std - u[0] * std
    assert np.allclose(raw_val, np.round(raw_val), atol=1e-3)
    assert raw_val.min() > -1e-3 and raw_val.max() < 16 + 1e-3
    raw = load_data("digits", seed=0, val_fraction=0.0)
    assert raw.x_val is None and raw.x_train.shape == (1797, 8, 8, 1)


def test_digits_seeded():
    a, b, c = load_data("digits", seed=1), load_data("digits", seed=1), load_data("digits", seed=2)
    assert np.array_equal(a.y_val, b.y_val) and np.array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)


def test_digits_max_train_is_stratified():
    data = load_data("digits", seed=0, max_train=100)
    assert data.x_train.shape == (100, 8, 8, 1)
    assert np.all(np.abs(np.bincount(data.y_train, minlength=10) - 10) <= 1)
    assert data.x_val.shape == (359, 8, 8, 1)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"val_fraction": 1.0}, ValueError, r"val_fraction=1\.0; expected a number in \[0, 1\)"),
        ({"val_fraction": "0.2"}, TypeError, "val_fraction='0.2'"),
        ({"max_train": 0}, ValueError, "max_train=0"),
        ({"max_train": 2.5}, TypeError, "max_train=2.5"),
        ({"seed": -1}, ValueError, "seed=-1"),
    ],
)
def test_load_data_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_data("digits", **kwargs)


# ------------------------------------------------------------------------------------------------
# standardize, labels
# ------------------------------------------------------------------------------------------------


def test_standardize_per_channel_train_stats_no_mutation():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(50, 4, 4, 3)) * [1.0, 5.0, 0.0] + [0.0, 3.0, 7.0]).astype(np.float32)
    other = x[:10] + 1.0
    before = x.copy()
    xs, os_, none = standardize(x, other, None)
    assert none is None and xs.dtype == np.float32 and os_.dtype == np.float32
    assert np.allclose(xs.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    assert np.allclose(xs.std(axis=(0, 1, 2)), [1, 1, 0], atol=1e-5)  # constant channel: std 0 -> 1
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    std[std == 0] = 1
    assert np.allclose(os_, (other - mean) / std, atol=1e-5)
    assert np.array_equal(x, before)
    with pytest.raises(ValueError, match=r"expected the same last axis"):
        standardize(x, np.zeros((2, 4, 4, 1)))


@pytest.mark.parametrize(
    "y, expected",
    [
        (np.array([2, 0, 1]), [2, 0, 1]),
        (np.array([[2], [0]]), [2, 0]),
        (np.array([1.0, 3.0]), [1, 3]),
        (np.eye(4)[[3, 1]], [3, 1]),
        (np.array([True, False]), [1, 0]),
    ],
)
def test_normalize_labels(y, expected):
    out = normalize_labels(y)
    assert out.dtype == np.int64 and out.tolist() == expected


@pytest.mark.parametrize(
    "y, exc, match",
    [
        (np.array([0.5, 1.0]), ValueError, r"1 non-integer values, the first y\[0\]=0\.5"),
        (np.array(["a", "b"]), TypeError, "np.unique"),
        (np.array([[0.9, 0.1], [0.0, 1.0]]), ValueError, "not one-hot"),
        (np.zeros((2, 2, 2)), ValueError, r"shape \(2, 2, 2\)"),
    ],
)
def test_normalize_labels_errors(y, exc, match):
    with pytest.raises(exc, match=match):
        normalize_labels(y)


# ------------------------------------------------------------------------------------------------
# npz
# ------------------------------------------------------------------------------------------------


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8), np.arange(n) % 3


def test_npz_round_trip_with_val(tmp_path):
    x, y = _images(30)
    xv, yv = _images(9, seed=1)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_val=xv, y_val=np.eye(3)[yv], class_names=np.array(["a", "b", "c"]))
    data = load_data(str(path))
    assert data.name == str(path) and data.class_names == ["a", "b", "c"] and data.n_classes == 3
    assert data.x_train.shape == (30, 6, 6, 1) and data.x_val.shape == (9, 6, 6, 1)
    assert np.array_equal(data.y_train, y) and np.array_equal(data.y_val, yv)
    mean, std = x.astype(np.float64).mean(), x.astype(np.float64).std()
    assert np.allclose(data.x_val, (xv - mean) / std, atol=1e-5)


def test_npz_without_val_is_carved(tmp_path):
    x, y = _images(30)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    data = load_data(str(path), val_fraction=0.2, seed=0)
    assert data.x_train.shape[0] == 24 and data.x_val.shape[0] == 6
    assert np.bincount(data.y_val).tolist() == [2, 2, 2]
    assert data.class_names == ["0", "1", "2"]


def test_npz_errors(tmp_path):
    x, y = _images(10)
    missing = tmp_path / "missing.npz"
    np.savez(missing, x=x, labels=y)
    with pytest.raises(
        ValueError,
        match=r"arrays \['labels', 'x'\]; expected arrays 'x' and 'y' "
        r"\(missing \['y'\]\)",
    ):
        load_data(str(missing))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.npz"))):
        load_data(str(tmp_path / "nope.npz"))
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="not a NumPy .npz archive"):
        load_data(str(text))
    halves = tmp_path / "halves.npz"
    np.savez(halves, x=x, y=y, x_val=x)
    with pytest.raises(ValueError, match="'x_val' and 'y_val' together"):
        load_data(str(halves))
    out_of_range = tmp_path / "range.npz"
    np.savez(out_of_range, x=x, y=y, class_names=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\].*expected integers in \[0, 2\)"):
        load_data(str(out_of_range))
    nan = tmp_path / "nan.npz"
    xf = x.astype(np.float32)
    xf[4, 0, 0, 0] = np.nan
    np.savez(nan, x=xf, y=y)
    with pytest.raises(ValueError, match=r"1 non-finite values .* first at x\[4\]"):
        load_data(str(nan), val_fraction=0.0)


# ------------------------------------------------------------------------------------------------
# TFDS (offline: mocked data, or an empty data directory)
# ------------------------------------------------------------------------------------------------


def test_tfds_mnist_mocked(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24):
        data = load_data("tfds:mnist", data_dir=str(tmp_path))
        names = tfds.builder("mnist", data_dir=str(tmp_path)).info.features["label"].names
        capped = load_data("tfds:mnist", data_dir=str(tmp_path), max_train=10)
    assert data.name == "tfds:mnist"
    assert data.x_train.shape == (24, 28, 28, 1) and data.x_val.shape == (24, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.class_names == list(names) and data.n_classes == 10
    assert abs(float(data.x_train.mean(dtype=np.float64))) < 1e-5
    assert abs(float(data.x_train.std(dtype=np.float64)) - 1.0) < 1e-4
    assert capped.x_train.shape == (10, 28, 28, 1)
    assert np.array_equal(capped.y_train, data.y_train[:10])


@pytest.mark.parametrize("via_env", [False, True])
def test_tfds_missing_data_never_downloads(tmp_path, monkeypatch, via_env):
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_download(*args, **kwargs):
        raise AssertionError("load_data tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    if via_env:
        monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
        kwargs = {}
    else:
        monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
        kwargs = {"data_dir": str(tmp_path)}
    with pytest.raises(DataNotFoundError) as info:
        load_data("tfds:mnist", **kwargs)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in (
        "'mnist' is not prepared",
        str(tmp_path),
        "tfds build mnist",
        "tfds.load('mnist')",
        "--data-dir",
        "TFDS_DATA_DIR",
    ):
        assert part in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing was fetched


def test_tfds_unknown_name_suggests_close_matches():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(
        ValueError,
        match=r"'mnistt' is not a TensorFlow Datasets builder.*"
        r"Close matches: mnist",
    ):
        load_data("tfds:mnistt")


# ------------------------------------------------------------------------------------------------
# The paper's datasets as presets (offline: mocked TFDS data)
# ------------------------------------------------------------------------------------------------

PRESET_CASES = [
    ("mnist", (28, 28, 1), 10),
    ("fashion_mnist", (28, 28, 1), 10),
    ("cifar10", (32, 32, 3), 10),
    ("cifar100", (32, 32, 3), 100),
]


@pytest.mark.parametrize("name, shape, n_classes", PRESET_CASES)
def test_preset_end_to_end_mocked(tmp_path, name, shape, n_classes):
    """A preset reads train and test through TFDS, scales to [0, 1], standardizes, and feeds a ProbeSet.

    ``tfds.testing.mock_data`` fakes each builder from its code: images of the declared shape with
    random uint8 pixels (0..254), random labels in 0..C-1, ``num_examples`` per split (train and test
    alike), and the ClassLabel names the code declares: the real names for fashion_mnist, "0".."C-1"
    for mnist and for CIFAR (whose real names live in the prepared data's metadata only).
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    from keras_stiffness.data.probes import ProbeSet
    from keras_stiffness.data.sources import PRESETS, read_preset

    preset = PRESETS[name]
    assert (preset.tfds_name, preset.image_shape, preset.n_classes) == (name, shape, n_classes)
    with tfds.testing.mock_data(num_examples=40):
        names = list(tfds.builder(name, data_dir=str(tmp_path)).info.features["label"].names)
        x, y, x_val, y_val, raw_names = read_preset(name, data_dir=str(tmp_path))
        data = load_data(name, data_dir=str(tmp_path), seed=0)
        capped = load_data(name, data_dir=str(tmp_path), max_train=10)

    # Before standardization: float32 images in [0, 1], multiples of 1/255.
    assert x.shape == (40, *shape) and x_val.shape == (40, *shape)
    assert x.dtype == np.float32 and x_val.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert np.allclose(x * 255, np.round(x * 255), atol=1e-4)
    assert raw_names == names

    # After: the same arrays standardized per channel with the training statistics.
    assert data.name == name
    assert data.x_train.shape == (40, *shape) and data.x_val.shape == (40, *shape)  # test split, not carved
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64 and data.y_val.dtype == np.int64
    assert data.input_shape == shape and data.n_classes == n_classes
    expected_train, expected_val = standardize(x, x_val)
    assert np.allclose(data.x_train, expected_train, atol=1e-5) and np.allclose(data.x_val, expected_val, atol=1e-5)
    channels = tuple(range(data.x_train.ndim - 1))
    assert np.allclose(data.x_train.mean(axis=channels, dtype=np.float64), 0, atol=1e-5)
    assert np.allclose(data.x_train.std(axis=channels, dtype=np.float64), 1, atol=1e-4)
    assert np.array_equal(data.y_train, y) and np.array_equal(data.y_val, y_val)
    for labels in (data.y_train, data.y_val):
        assert 0 <= labels.min() and labels.max() < n_classes
    assert data.class_names == names and len(names) == n_classes
    if name == "fashion_mnist":
        assert names[:2] == ["T-shirt/top", "Trouser"]
    assert capped.x_train.shape == (10, *shape) and np.array_equal(capped.y_train, data.y_train[:10])

    # Stratified probes: min(per_class, available) of every class, in class order, train then held out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cifar100: 40 examples leave most classes short
        probes = ProbeSet.from_splits(data, per_class=2, seed=0)
    assert probes.source == name and probes.n_classes == n_classes and probes.class_names == names
    assert probes.x.shape[1:] == shape
    for part, labels in ((probes.y_train, data.y_train), (probes.y_val, data.y_val)):
        expected = np.minimum(np.bincount(labels, minlength=n_classes), 2)
        assert np.array_equal(np.bincount(part, minlength=n_classes), expected)
        assert np.all(np.diff(part) >= 0)


def test_preset_missing_data_names_the_preset(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_download(*args, **kwargs):
        raise AssertionError("load_data tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(DataNotFoundError) as info:
        load_data("cifar10", data_dir=str(tmp_path))
    message = str(info.value)
    for part in ("source='cifar10'", "'cifar10' is not prepared", str(tmp_path), "tfds build cifar10", "--data-dir"):
        assert part in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_preset_refuses_other_shapes(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from keras_stiffness.data.sources import PRESETS

    monkeypatch.setitem(PRESETS, "mnist", dataclasses.replace(PRESETS["mnist"], image_shape=(32, 32, 1)))
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(ValueError, match=r"shape \(28, 28, 1\).*expected uint8 images of shape \(32, 32, 1\)"):
            load_data("mnist", data_dir=str(tmp_path))
