"""Format version 2 of the run store: Fletcher32 checksums (damage is an error, never other numbers),
the reader of version 1 files, the upgrade of a version 1 file on resume, and the ``seconds`` cost tag."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import store_helper as helper
from click.testing import CliRunner

from keras_stiffness.cli.main import cli
from keras_stiffness.math.record import COST_TAGS, TAGS
from keras_stiffness.store import layout as store_layout
from keras_stiffness.store.layout import (
    FORMAT_VERSION,
    SERIES,
    FormatVersionError,
    RunDamagedError,
    RunFileError,
)
from keras_stiffness.store.reader import open_run
from keras_stiffness.store.writer import RunWriter

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
make_info, make_measurement = helper.make_info, helper.make_measurement

#: A run file of format version 1: a copy of the old reference run ``saved_runs/sweep/mlp-digits-lr0.001``
#: (made by ``kstiff train`` before version 2; the golden CLI test pins its `inspect`).
V1_RUN = HERE / "data" / "run_format1.h5"
#: Every growing dataset of a version 2 file with save_gram=True.
GROWING = [s.name for s in SERIES]
FIXED_NUMBERS = ["probe_label", "probe_index", "probe_is_val", "bin", "bin_edge", "probe", "probe_j"]


def write_run(path, steps=(0, 10, 20), save_gram=True):
    with RunWriter.create(path, make_info(save_gram=save_gram)) as writer:
        for step in steps:
            writer.append(make_measurement(step, save_gram=save_gram, seconds=0.25 + step))


def flip(path, name, row_byte=0):
    """XOR one aligned 16-bit word of the first chunk of dataset ``name`` (in row 0 by default).

    Fletcher32 misses only a word turning from 0x0000 into 0xFFFF or back; XOR with 0x5A5A never does.
    """
    with h5py.File(path, "r") as f:
        chunk = f[name].id.get_chunk_info(0)
    offset = chunk.byte_offset + row_byte
    with open(path, "r+b") as fh:
        fh.seek(offset)
        word = fh.read(2)
        fh.seek(offset)
        fh.write(bytes(b ^ 0x5A for b in word))


def inspect(path, *args):
    return CliRunner().invoke(cli, ["inspect", str(path), *args], prog_name="kstiff")


def assert_one_line_error(result, *parts):
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Received: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


# ---- checksums ----------------------------------------------------------------------------------


def test_every_numeric_dataset_is_checksummed_and_still_swmr_resizable(tmp_path):
    """Fletcher32 with SWMR, resizable chunked datasets (also an empty axis) and libver v110."""
    path = tmp_path / "run.h5"
    with RunWriter.create(path, make_info(save_gram=True)) as writer:
        assert writer._file.swmr_mode and writer._file.libver == ("v110", "v110")
        for step in (0, 10, 20):
            writer.append(make_measurement(step, save_gram=True))
    with h5py.File(path, "r") as f:
        assert int(f.attrs["format_version"]) == FORMAT_VERSION == 3
        for name in GROWING + FIXED_NUMBERS:
            assert f[name].fletcher32 and f[name].chunks, name
        for name in GROWING:
            assert f[name].maxshape[0] is None and f[name].shape[0] == 3, name
    # Resizing both ways on a checksummed file: shorten in place, then append again.
    with RunWriter.resume(path, make_info(save_gram=True), from_step=10) as writer:
        writer.append(make_measurement(15, seed=3, save_gram=True))
    with open_run(path) as run:
        assert run.tags["step"].tolist() == [0, 15]
        np.testing.assert_array_equal(run.series("gram")[1], make_measurement(15, seed=3, save_gram=True).gram)
    # An empty axis (no layers, no distance spaces) is resizable too.
    path = tmp_path / "empty_axes.h5"
    with RunWriter.create(path, make_info(layers=(), spaces=(), rules={})) as writer:
        writer.append(make_measurement(0, layers=(), spaces=()))
    with open_run(path) as run, h5py.File(path, "r") as f:
        assert f["layer_mean"].fletcher32 and run.series("layer_mean").shape == (1, 0, helper.P, helper.M)


@pytest.mark.parametrize("name", ["within", "class_matrix", "step", "epoch", "seconds", "gram", "curve_count"])
def test_a_damaged_chunk_raises_an_error_naming_the_dataset(tmp_path, name):
    path = tmp_path / "run.h5"
    write_run(path)
    flip(path, name)
    with open_run(path) as run:  # the header is intact; the rows are read when asked for
        with pytest.raises(RunDamagedError) as caught:
            run.series(name)
        error = caught.value
        assert error.dataset == name and error.path == str(path)
        assert isinstance(error, RunFileError) and isinstance(error.__cause__, OSError)
        message = str(error)
        assert message.startswith(f"Received: {str(path)!r}, whose dataset {name!r} cannot be read intact")
        assert "expected data that matches its checksum" in message and "restore it" in message
        with pytest.raises(RunDamagedError, match=repr(name)):
            run.measurement(0)
        if name in TAGS + COST_TAGS:
            with pytest.raises(RunDamagedError, match=repr(name)):
                _ = run.tags
        other = "between" if name != "between" else "within"
        assert run.series(other).shape[0] == 3  # the rest of the file still reads
    assert_one_line_error(inspect(path), str(path), f"whose dataset {name!r}")


def test_a_damaged_header_dataset_fails_open_run_and_the_cli(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path)
    flip(path, "probe_label")
    with pytest.raises(RunDamagedError, match="whose dataset 'probe_label' cannot be read intact") as caught:
        open_run(path)
    assert caught.value.dataset == "probe_label" and isinstance(caught.value.__cause__, OSError)
    assert_one_line_error(inspect(path, "--format", "json"), "'probe_label'")
    result = CliRunner().invoke(cli, ["plot", str(path), "--out", str(tmp_path / "figs")], prog_name="kstiff")
    assert_one_line_error(result, "'probe_label'")
    assert not (tmp_path / "figs").exists() or not any((tmp_path / "figs").iterdir())


def test_zeroing_4k_in_the_middle_of_a_run_file_is_an_error(tmp_path):
    """The issue's case: 4 KiB of zeros in the middle of the file used to change numbers silently."""
    path = tmp_path / "run.h5"
    write_run(path, steps=tuple(range(0, 300, 10)), save_gram=False)
    before = inspect(path, "--format", "json")
    assert before.exit_code == 0
    middle = (path.stat().st_size // 2) // 4096 * 4096
    with open(path, "r+b") as fh:
        fh.seek(middle)
        fh.write(bytes(4096))
    after = inspect(path, "--format", "json")
    # This file's middle holds rows of a growing dataset (the layout is deterministic).
    assert_one_line_error(after, str(path), "cannot be read intact")


# ---- live reading (SWMR) --------------------------------------------------------------------------

WRITER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("store_helper", sys.argv[2])
helper = importlib.util.module_from_spec(spec); spec.loader.exec_module(helper)
from keras_stiffness.store.writer import RunWriter
with RunWriter.create(sys.argv[1], helper.make_info(save_gram=True)) as writer:
    print("created", flush=True)
    for i in range(int(sys.argv[3])):
        writer.append(helper.make_measurement(i, save_gram=True))
print("done", flush=True)
"""


def test_reading_while_a_writer_appends_never_reports_damage(tmp_path):
    """A SWMR read can overlap the writer's in-place rewrite of a checksummed chunk; Run re-reads."""
    path, rows = tmp_path / "live.h5", 400
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(HERE / "store_helper.py"), str(rows)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "created", proc.stderr.read()
        reads, deadline = 0, time.monotonic() + 60
        with open_run(path) as run:
            while time.monotonic() < deadline:
                run.refresh()
                n = len(run)
                if n:
                    assert run.series("class_matrix").shape[0] == n
                    gram = run.series("gram")
                    np.testing.assert_array_equal(gram[-1], make_measurement(n - 1, save_gram=True).gram)
                    assert run.measurement(n - 1).step == n - 1
                    reads += 1
                if n == rows:
                    break
        assert n == rows and reads > 10
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ---- format version 1 -----------------------------------------------------------------------------


def test_the_fixture_is_version_1():
    with h5py.File(V1_RUN, "r") as f:
        assert int(f.attrs["format_version"]) == 1 and "seconds" not in f


def test_a_version_1_file_reads_as_before_with_seconds_nan(tmp_path):
    source = V1_RUN
    path = tmp_path / "run.h5"
    shutil.copy(source, path)
    with open_run(path) as run, h5py.File(path, "r") as f:
        assert run.format_version == 1
        n = len(run)
        assert n == f["step"].shape[0] > 0
        tags = run.tags
        assert list(tags) == list(TAGS + COST_TAGS)
        assert tags["seconds"].shape == (n,) and np.isnan(tags["seconds"]).all()
        for name in store_layout.series_names(run.info.save_gram, 1):
            if name != "measurement":
                np.testing.assert_array_equal(run.series(name), f[name][:n], err_msg=name)
        for i in (0, n - 1):
            m = run.measurement(i)
            assert math.isnan(m.seconds)
            for field in dataclasses.fields(m):
                if field.name in f and field.name != "gram":
                    np.testing.assert_array_equal(getattr(m, field.name), f[field.name][i], err_msg=field.name)
    assert path.read_bytes() == source.read_bytes()  # reading changed nothing


def test_resuming_a_version_1_file_upgrades_it_to_the_current_version(tmp_path):
    source = V1_RUN
    path = tmp_path / "run.h5"
    shutil.copy(source, path)
    with open_run(source) as old:
        info, n = old.info, len(old)
        steps = old.tags["step"]
        old_rows = [old.measurement(i) for i in range(n)]
    new_row = dataclasses.replace(old_rows[-1], seconds=1.5)
    with RunWriter.resume(path, info, from_step=int(steps[-1])) as writer:
        assert writer.n_rows == n - 1
        writer.append(new_row)
    assert os.listdir(tmp_path) == ["run.h5"]
    with open_run(path) as run, h5py.File(path, "r") as f:
        assert run.format_version == int(f.attrs["format_version"]) == FORMAT_VERSION
        assert all(f[name].fletcher32 for name in GROWING if name in f)
        assert len(run) == n
        np.testing.assert_array_equal(run.tags["step"], steps)
        seconds = run.tags["seconds"]
        assert np.isnan(seconds[:-1]).all() and seconds[-1] == 1.5
        for i in (0, n - 2):
            got, want = run.measurement(i), old_rows[i]
            for field in dataclasses.fields(want):
                a, b = getattr(got, field.name), getattr(want, field.name)
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field.name)
        with h5py.File(source, "r") as src:
            for name in ("created", "config", "probe_hash", "library_version"):
                assert f.attrs[name] == src.attrs[name], name
        (record,) = json.loads(run.attrs["resumed"])
        assert record["from_format_version"] == 1 and record["rows_dropped"] == 1
        assert record["after_crash"] is False
    result = inspect(path)
    assert result.exit_code == 0 and "(format version 3)" in result.stdout


def test_resuming_a_version_2_file_records_its_version(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, save_gram=False)
    with h5py.File(path, "r+") as f:  # a version-2 file: the series of version 3 did not exist yet
        for name in ("memory_budget", "block_size", "blocks", "block_pairs", "worker_pairs", "workers"):
            del f[name]
        f.attrs["format_version"] = np.int64(2)
    size = path.stat().st_size
    with RunWriter.resume(path, make_info(), from_step=20):
        pass
    with open_run(path) as run:
        assert json.loads(run.attrs["resumed"])[0]["from_format_version"] == 2
    assert path.stat().st_size < 2 * size  # shortened in place, not rewritten


def test_a_version_4_file_is_refused(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, save_gram=False)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(4)
    before = path.read_bytes()
    with pytest.raises(FormatVersionError, match="format_version=4; expected <= 3: it was written by a newer"):
        open_run(path)
    with pytest.raises(FormatVersionError, match="format_version=4"):
        RunWriter.resume(path, make_info(), from_step=0)
    assert_one_line_error(inspect(path), "format_version=4", "upgrade")
    assert path.read_bytes() == before


# ---- the seconds cost tag -------------------------------------------------------------------------


def test_seconds_round_trips_and_defaults_to_nan(tmp_path):
    path = tmp_path / "run.h5"
    with RunWriter.create(path, make_info()) as writer:
        writer.append(make_measurement(0, seconds=2.5))
        writer.append(make_measurement(1))  # a Measurement made without it: NaN
    with open_run(path) as run:
        assert run.measurement(0).seconds == 2.5 and math.isnan(run.measurement(1).seconds)
        assert run.series("seconds")[0] == 2.5


def test_callback_records_the_seconds_of_each_measurement(tmp_path):
    import keras

    from keras_stiffness import ProbeSet, StiffnessCallback

    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = (rng.normal(size=(64, 4)) + y[:, None]).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    probes = ProbeSet(x, y, per_class=4)
    path = tmp_path / "run.h5"
    cb = StiffnessCallback(probes, str(path), bins=3, min_count=1)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    with open_run(path) as run:
        seconds = run.tags["seconds"]
    assert len(seconds) == len(cb.seconds) == 3
    assert np.all(seconds > 0) and np.all(seconds <= np.array(cb.seconds))
    assert [m.seconds for m in cb.measurements] == seconds.tolist()


def test_analyze_records_its_seconds(tmp_path):
    import keras

    from keras_stiffness import ProbeSet
    from keras_stiffness.app.analysis import analyze

    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    x = rng.normal(size=(40, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    probes = ProbeSet(x, y, per_class=4)
    start = time.perf_counter()
    m, info, description = analyze(model, probes)
    elapsed = time.perf_counter() - start
    assert 0 < m.seconds <= elapsed
    path = str(tmp_path / "one.h5")
    m2, _, _ = analyze(model, probes, out=path)
    with open_run(path) as run:
        assert run.tags["seconds"].tolist() == [m2.seconds]
