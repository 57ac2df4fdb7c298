"""Tests of the HDF5 run store (no TensorFlow): round trips, layout, errors, resume, SWMR, crashes."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest
import store_helper as helper

import keras_stiffness
from keras_stiffness.store import layout as store_layout
from keras_stiffness.store.layout import (
    FORMAT,
    FORMAT_VERSION,
    FormatVersionError,
    MeasurementMismatchError,
    NotARunError,
    RunFileError,
    RunInfo,
    RunInUseError,
    RunMismatchError,
)
from keras_stiffness.store.reader import open_run
from keras_stiffness.store.writer import RunWriter

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "store_helper.py")
make_info, make_measurement = helper.make_info, helper.make_measurement
C, P, M, L, R, B, N = helper.C, helper.P, helper.M, helper.L, helper.R, helper.B, helper.N


def write_run(path, steps=(0, 10, 20), save_gram=False, **info_changes):
    with RunWriter.create(path, make_info(save_gram=save_gram, **info_changes)) as writer:
        for step in steps:
            writer.append(make_measurement(step, save_gram=save_gram))
    return [make_measurement(step, save_gram=save_gram) for step in steps]


def assert_same_measurement(got, expected):
    for f in dataclasses.fields(expected):
        a, b = getattr(got, f.name), getattr(expected, f.name)
        if f.name == "gram" and b is None:
            assert a is None
        elif isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f.name)  # NaN == NaN here
            assert a.shape == b.shape, f.name
        elif isinstance(b, float) and np.isnan(b):
            assert np.isnan(a), f.name
        else:
            assert a == b and type(a) is type(b), f.name


# ---- round trip and layout -----------------------------------------------------------------


@pytest.mark.parametrize("save_gram", [False, True])
def test_round_trip_every_field(tmp_path, save_gram):
    path = tmp_path / "run.h5"
    expected = write_run(path, save_gram=save_gram)
    with open_run(path) as run:
        assert len(run) == run.n_measurements == 3
        for i, m in enumerate(expected):
            assert_same_measurement(run.measurement(i), m)
        assert_same_measurement(run.measurement(-1), expected[-1])
        assert [m.step for m in run] == [0, 10, 20]
        info, ref = run.info, make_info(save_gram=save_gram)
        for f in dataclasses.fields(RunInfo):
            a, b = getattr(info, f.name), getattr(ref, f.name)
            if isinstance(b, np.ndarray):
                np.testing.assert_array_equal(a, b)
                assert a.dtype == b.dtype
            else:
                assert a == b, f.name
        assert run.config == ref.config and run.format_version == FORMAT_VERSION
        assert run.class_names == ["cat", "dog", "émeu"]
        assert (run.pair_sets, run.measures, run.layers, run.spaces) == (
            helper.PAIR_SETS,
            helper.MEASURES,
            helper.LAYERS,
            helper.SPACES,
        )
        assert run.attrs["library_version"] == keras_stiffness.__version__  # the one place: version.py
        assert run.attrs["created"].endswith("+00:00")


def test_tags_and_series_shapes(tmp_path):
    path = tmp_path / "run.h5"
    expected = write_run(path, steps=(0, 5, 7, 30))
    with open_run(path) as run:
        tags = run.tags
        assert list(tags) == [
            "step",
            "epoch",
            "train_loss",
            "val_loss",
            "learning_rate",
            "wall_time",
            "probe_loss",
            "probe_val_loss",
            "seconds",
            "memory_budget",
            "block_size",
            "blocks",
            "block_pairs",
            "worker_pairs",
            "workers",
        ]
        assert tags["step"].dtype == np.int64 and tags["step"].tolist() == [0, 5, 7, 30]
        assert np.isnan(tags["train_loss"][0])
        np.testing.assert_array_equal(tags["val_loss"], [m.val_loss for m in expected])
        shapes = {
            "within": (4, P, M),
            "class_matrix": (4, P, M, C, C),
            "class_pairs": (4, P, C, C),
            "pairs": (4, P),
            "layer_between": (4, L, P, M),
            "distance_edges": (4, R, B + 1),
            "curve_mean": (4, R, M, B),
            "curve_count": (4, R, B),
            "critical_length": (4, R, M),
            "critical_length_fit": (4, R, M),
            "zero_grad": (4,),
        }
        for name, shape in shapes.items():
            assert run.series(name).shape == shape, name
        np.testing.assert_array_equal(run.series("within")[2], expected[2].within)
        with pytest.raises(
            ValueError,
            match=r"Received: name='gram' \(this run was written with "
            r"save_gram=False\); expected one of \['step'",
        ):
            run.series("gram")
        with pytest.raises(ValueError, match="Received: name='nope'"):
            run.series("nope")
        with pytest.raises(IndexError, match=r"Received: i=4; expected an int with -4 <= i < 4"):
            run.measurement(4)


def test_no_layers_and_no_distance_spaces(tmp_path):
    """L = 0 (no per-layer blocks) and R = 0 (distances off) give empty axes that still work."""
    xr = pytest.importorskip("xarray")
    path = tmp_path / "run.h5"
    with RunWriter.create(path, make_info(layers=(), spaces=(), rules={})) as writer:
        for step in (0, 1):
            writer.append(make_measurement(step, layers=(), spaces=()))
        with pytest.raises(MeasurementMismatchError, match=r"Received: .* layers=\('dense_0'"):
            writer.append(make_measurement(2))
    with open_run(path) as run:
        assert (run.layers, run.spaces) == ((), ())
        assert run.series("layer_mean").shape == (2, 0, P, M)
        assert run.series("curve_mean").shape == (2, 0, M, B)
        assert_same_measurement(run.measurement(1), make_measurement(1, layers=(), spaces=()))
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.sizes["layer"] == 0 and ds.sizes["space"] == 0 and ds.sizes["measurement"] == 2
        assert ds["critical_length"].dims == ("measurement", "space", "measure")


def test_empty_run_has_zero_rows(tmp_path):
    path = tmp_path / "run.h5"
    RunWriter.create(path, make_info()).close()
    with open_run(path) as run:
        assert len(run) == 0 and run.series("class_matrix").shape == (0, P, M, C, C)


def test_xarray_sees_named_dimensions(tmp_path):
    xr = pytest.importorskip("xarray")
    path = tmp_path / "run.h5"
    write_run(path, save_gram=True)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["within"].dims == ("measurement", "pair_set", "measure")
        assert ds["class_matrix"].dims == ("measurement", "pair_set", "measure", "class_from", "class_to")
        assert ds["layer_mean"].dims == ("measurement", "layer", "pair_set", "measure")
        assert ds["curve_mean"].dims == ("measurement", "space", "measure", "bin")
        assert ds["distance_edges"].dims == ("measurement", "space", "bin_edge")
        assert ds["gram"].dims == ("measurement", "probe", "probe_j")
        assert ds["probe_label"].dims == ("probe",)
        assert dict(ds.sizes) == {
            "measurement": 3,
            "pair_set": P,
            "measure": M,
            "class_from": C,
            "class_to": C,
            "layer": L,
            "space": R,
            "bin": B,
            "bin_edge": B + 1,
            "probe": N,
            "probe_j": N,
        }
        assert ds["class_to"].values.tolist() == ["cat", "dog", "émeu"]
        assert ds["pair_set"].values.tolist() == list(helper.PAIR_SETS)
        assert ds["step"].values.tolist() == [0, 10, 20]
        assert ds["class_pairs"].dtype == np.int64
        assert ds.attrs["format"] == FORMAT
        value = ds["class_matrix"].sel(pair_set="train-val", measure="cos", class_from="dog", class_to="émeu").values
        np.testing.assert_array_equal(value, [make_measurement(s).class_matrix[1, 1, 1, 2] for s in (0, 10, 20)])


def test_h5py_sees_attributes_and_dimension_scales(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == FORMAT_VERSION
        for name in (
            "created",
            "library_version",
            "config",
            "model_summary",
            "loss",
            "rules",
            "versions",
            "metric",
            "min_count",
            "probe_hash",
            "save_gram",
        ):
            assert name in f.attrs, name
        assert f["step"].maxshape == (None,) and f["step"].chunks is not None
        for name, series in store_layout.SERIES_BY_NAME.items():
            if name in ("gram", "measurement"):
                continue
            ds = f[name]
            axes = ("measurement",) + series.axes
            assert ds.ndim == len(axes), name
            for i, axis in enumerate(axes):
                assert len(ds.dims[i]) == 1 and ds.dims[i][0].name == "/" + axis, (name, axis)
            assert ds.attrs["description"]
        for axis in store_layout.STRING_AXES + ("bin", "bin_edge", "probe", "measurement"):
            assert f[axis].is_scale, axis
        assert "probe_j" not in f  # only with save_gram
        assert f["probe_label"].dims[0][0].name == "/probe"
        assert f["probe_is_val"].dtype == bool


# ---- create: existing files and bad paths ----------------------------------------------------


def test_create_refuses_existing_file_and_leaves_it_alone(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, steps=(0,))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists.*Pass overwrite=True"):
        RunWriter.create(path, make_info())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.h5"]  # no temporary file left behind


def test_overwrite_replaces_only_once_the_new_file_exists(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, steps=(0, 10))
    before = path.read_bytes()
    with pytest.raises(TypeError, match="expected a RunInfo"):
        RunWriter.create(path, {"not": "info"}, overwrite=True)
    assert path.read_bytes() == before
    with RunWriter.create(path, make_info(probe_hash="new"), overwrite=True) as writer:
        writer.append(make_measurement(5))
    with open_run(path) as run:
        assert run.tags["step"].tolist() == [5] and run.info.probe_hash == "new"
    assert os.listdir(tmp_path) == ["run.h5"]


def test_create_needs_an_existing_writable_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Received: path=.*does not exist\. Create it"):
        RunWriter.create(tmp_path / "missing" / "run.h5", make_info())
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        RunWriter.create(tmp_path / "file" / "run.h5", make_info())
    with pytest.raises(IsADirectoryError, match="which is a directory"):
        RunWriter.create(tmp_path, make_info())
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_create_in_read_only_directory(tmp_path, monkeypatch):
    """Fails as root too: the access check is made to see the directory as read-only (as chmod does
    for any other user), so the refusal path runs whoever runs the suite."""
    locked = tmp_path / "ro"
    locked.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if os.path.abspath(path) == str(locked) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(PermissionError, match="is not writable"):
        RunWriter.create(locked / "run.h5", make_info())
    assert os.listdir(locked) == []


# ---- measurements that do not fit ----------------------------------------------------------

BAD_MEASUREMENTS = [
    (
        dict(class_matrix=np.zeros((P, M, C + 1, C + 1))),
        r"Received: class_matrix with shape \(3, 2, 4, 4\); expected \(3, 2, 3, 3\)",
    ),
    (dict(within=np.zeros((P - 1, M))), r"Received: within with shape \(2, 2\)"),
    (dict(layer_mean=np.zeros((L + 1, P, M))), r"Received: layer_mean with shape \(3, 3, 2\)"),
    (dict(distance_edges=np.zeros((R, B))), r"Received: distance_edges with shape \(3, 5\)"),
    (dict(curve_count=np.full((R, B), 0.5)), "Received: curve_count with non-integer values"),
    (dict(measures=("cos",)), r"Received: Measurement with measures=\('cos',\)"),
    (dict(layers=("other", "dense_1")), "Received: Measurement with layers="),
    (dict(train_loss=None), r"Received: Measurement with train_loss=None; expected a number \(NaN"),
    (dict(epoch="one"), r"Received: epoch with dtype <U3; expected numbers"),
]


@pytest.mark.parametrize("changes, message", BAD_MEASUREMENTS, ids=[next(iter(c)) for c, _ in BAD_MEASUREMENTS])
def test_measurement_that_does_not_fit_is_rejected_before_writing(tmp_path, changes, message):
    path = tmp_path / "run.h5"
    with RunWriter.create(path, make_info()) as writer:
        writer.append(make_measurement(0))
        before = path.read_bytes()
        with pytest.raises(MeasurementMismatchError, match=message):
            writer.append(make_measurement(1, **changes))
        assert path.read_bytes() == before and writer.n_rows == 1
        writer.append(make_measurement(2))  # the writer is still usable
    with open_run(path) as run:
        assert run.tags["step"].tolist() == [0, 2]


def test_append_rules(tmp_path):
    with RunWriter.create(tmp_path / "g.h5", make_info(save_gram=True)) as writer:
        with pytest.raises(MeasurementMismatchError, match="gram=None.*save_gram=True"):
            writer.append(make_measurement(0))
        with pytest.raises(TypeError, match="expected a keras_stiffness Measurement"):
            writer.append({"step": 0})
        writer.append(make_measurement(3, save_gram=True))
        with pytest.raises(ValueError, match="Received: Measurement with step=2; expected step >= 3"):
            writer.append(make_measurement(2, save_gram=True))
    with pytest.raises(ValueError, match="Received: append\\(\\) on a closed RunWriter"):
        writer.append(make_measurement(4, save_gram=True))
    writer.close()  # idempotent
    with RunWriter.create(tmp_path / "n.h5", make_info()) as writer:
        writer.append(make_measurement(0, save_gram=True))  # gram ignored without save_gram
    with open_run(tmp_path / "n.h5") as run:
        assert run.measurement(0).gram is None


BAD_INFOS = [
    (dict(metric="manhattan"), ValueError, "Received: metric='manhattan'; expected one of"),
    (dict(bins=0), ValueError, "Received: bins=0; expected a positive integer"),
    (dict(probe_labels=np.arange(N - 1)), ValueError, "expected one common length"),
    (dict(probe_labels=np.linspace(0, 1, N)), TypeError, "expected a 1-D integer array"),
    (dict(measures=()), ValueError, r"Received: measures=\[\] \(empty\); expected at least one"),
    (dict(config={"f": object()}), TypeError, "Received: config that JSON cannot encode"),
    (dict(pair_sets="train-train"), TypeError, "expected a sequence of str"),
]


@pytest.mark.parametrize("changes, error, message", BAD_INFOS, ids=[next(iter(c)) for c, _, _ in BAD_INFOS])
def test_bad_run_info_is_rejected(changes, error, message):
    with pytest.raises(error, match=message):
        make_info(**changes)


# ---- files that are not runs -------------------------------------------------------------------


def test_open_run_rejects_files_that_are_not_runs(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(NotARunError, match="which is not an HDF5 file"):
        open_run(text)
    model = tmp_path / "model.h5"
    with h5py.File(model, "w") as f:  # what a Keras 2 model file looks like
        f.attrs["keras_version"] = "2.15.0"
        f.create_group("model_weights").create_dataset("kernel", data=np.ones((3, 2)))
    with pytest.raises(
        NotARunError,
        match=r"format attribute None and top-level items "
        r"\['model_weights'\]; expected a keras_stiffness run",
    ):
        open_run(model)
    with pytest.raises(FileNotFoundError, match="which does not exist"):
        open_run(tmp_path / "absent.h5")
    assert issubclass(NotARunError, RunFileError) and issubclass(RunFileError, ValueError)


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.99])
def test_open_run_rejects_truncated_file(tmp_path, fraction):
    path = tmp_path / "run.h5"
    write_run(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(NotARunError, match="truncated or damaged"):
        open_run(path)


def test_newer_format_version_is_rejected(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(FormatVersionError, match="written by a newer keras_stiffness; upgrade"):
        open_run(path)
    with pytest.raises(FormatVersionError, match="newer keras_stiffness"):
        RunWriter.resume(path, make_info(), from_step=0)


def test_damaged_run_is_rejected(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path)
    with h5py.File(path, "r+") as f:
        del f["probe_label"]
    with pytest.raises(NotARunError, match="missing or invalid content"):
        open_run(path)


# ---- resume -------------------------------------------------------------------------------------


def test_resume_drops_rows_from_step_and_appends(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, steps=(0, 10, 20, 30))
    size = path.stat().st_size
    with RunWriter.resume(path, make_info(), from_step=20) as writer:
        assert writer.n_rows == 2
        with pytest.raises(ValueError, match="expected step >= 10"):
            writer.append(make_measurement(5, seed=1))
        writer.append(make_measurement(20, seed=1))
        writer.append(make_measurement(25, seed=1))
    with open_run(path) as run:
        assert run.tags["step"].tolist() == [0, 10, 20, 25]
        assert_same_measurement(run.measurement(1), make_measurement(10))
        assert_same_measurement(run.measurement(2), make_measurement(20, seed=1))
        assert len(run.series("class_matrix")) == len(run.series("zero_grad")) == 4
        (record,) = json.loads(run.attrs["resumed"])
        assert record["from_step"] == 20 and record["rows_dropped"] == 2
        assert record["after_crash"] is False
    assert path.stat().st_size < 2 * size  # shortened in place, not copied
    with RunWriter.resume(path, make_info(), from_step=100) as writer:  # nothing to drop
        assert writer.n_rows == 4
    with RunWriter.resume(path, make_info(), from_step=0) as writer:  # everything dropped
        assert writer.n_rows == 0
        writer.append(make_measurement(0))
    with open_run(path) as run, h5py.File(path, "r") as f:
        assert len(run) == 1
        assert {f[name].shape[0] for name in store_layout.series_names(False)} == {1}


def test_resume_rejects_a_different_run(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path)
    before = path.read_bytes()
    with pytest.raises(RunMismatchError, match="probe_hash: file has 'hash-0', received 'other'"):
        RunWriter.resume(path, make_info(probe_hash="other"), from_step=10)
    with pytest.raises(RunMismatchError, match="bins: file has 5, received 6"):
        RunWriter.resume(path, make_info(bins=6), from_step=10)
    with pytest.raises(RunMismatchError, match="class_names"):
        RunWriter.resume(path, make_info(class_names=["a", "b", "c"]), from_step=10)
    with pytest.raises(FileNotFoundError, match="Use RunWriter.create"):
        RunWriter.resume(tmp_path / "none.h5", make_info(), from_step=0)
    with pytest.raises(ValueError, match="Received: from_step=-1"):
        RunWriter.resume(path, make_info(), from_step=-1)
    assert path.read_bytes() == before


# ---- several processes ---------------------------------------------------------------------------


class Child:
    """A helper subprocess whose output lines arrive on a queue."""

    def __init__(self, *args):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, HELPER, *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, text, timeout=20):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"no {text!r} from the helper; stderr: {self.proc.stderr.read()}")
        assert line == text
        return line

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.kill()
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_second_process_reads_while_this_one_appends(tmp_path):
    path = tmp_path / "run.h5"
    with RunWriter.create(path, make_info()) as writer:
        writer.append(make_measurement(0))
        with Child("read", path, 4) as reader:
            reader.expect("rows 1 step 0")
            for i, step in enumerate((10, 20, 30), start=2):
                writer.append(make_measurement(step))
                reader.expect(f"rows {i} step {step}")
            assert reader.proc.wait(timeout=20) == 0


@pytest.mark.parametrize("partial", [False, True])
def test_killed_writer_leaves_a_readable_resumable_file(tmp_path, partial):
    path, k = tmp_path / "run.h5", 3
    with Child("write", path, k, *(["partial"] if partial else [])) as writer:
        for i in range(1, k + 1):
            writer.expect(f"row {i} flushed")
        if partial:
            writer.expect("partial row flushed")
        with pytest.raises(RunInUseError, match="which is open elsewhere"):
            RunWriter.resume(path, make_info(), from_step=0)
        with pytest.raises(RunInUseError, match="which is open elsewhere"):
            RunWriter.create(path, make_info(), overwrite=True)
        writer.kill()
    with open_run(path) as run:
        assert len(run) == k
        assert_same_measurement(run.measurement(-1), make_measurement(10 * (k - 1)))
    with RunWriter.resume(path, make_info(), from_step=10 * (k - 1)) as resumed:
        assert resumed.n_rows == k - 1
        resumed.append(make_measurement(25, seed=2))
    with h5py.File(path, "r") as f:  # closed cleanly now: a plain open works
        assert {f[name].shape[0] for name in store_layout.series_names(False)} == {k}
    with open_run(path) as run:
        assert run.tags["step"].tolist() == [0, 10, 25]
        assert json.loads(run.attrs["resumed"])[0]["after_crash"] is True
    assert os.listdir(tmp_path) == ["run.h5"]
