"""The Gram matrix in the run store: written blockwise, stored in square tiles as float64 or float32,
read whole or by blocks, and the size limit (no TensorFlow)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import store_helper as helper

from keras_stiffness.store import files as store_files
from keras_stiffness.store.layout import (
    GRAM_BYTES_LIMIT,
    MeasurementMismatchError,
    RunDamagedError,
    RunMismatchError,
    check_gram_size,
    gram_bytes,
    gram_tile,
    series_names,
)
from keras_stiffness.store.reader import open_run
from keras_stiffness.store.writer import RunWriter

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
make_measurement = helper.make_measurement
V1_RUN = HERE / "data" / "run_format1.h5"


def make_info(n=helper.N, **changes):
    """The helper's RunInfo with save_gram=True and ``n`` probes."""
    probes = dict(probe_labels=np.arange(n) % helper.C, probe_indices=np.arange(n), probe_is_val=np.arange(n) >= n - 3)
    return helper.make_info(**{"save_gram": True, **probes, **changes})


def symmetric(n, seed=0):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a + a.T  # exactly symmetric


def partition(n, size):
    """Probe ranges of at most ``size`` probes covering 0..n-1 (the last one shorter when size does not divide n)."""
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def write_upper_blocks(row, g, size):
    """Write the blocks (I, J), I <= J, of a partition of the probes; return how many were written."""
    ranges, count = partition(len(g), size), 0
    for i, (a, b) in enumerate(ranges):
        for c, d in ranges[i:]:
            row.write(a, c, g[a:b, c:d])
            count += 1
    return count


def write_run(path, grams, *, blockwise, size=3, **info_changes):
    with RunWriter.create(path, make_info(n=len(grams[0]), **info_changes)) as writer:
        for step, g in enumerate(grams):
            if blockwise:
                write_upper_blocks(writer.begin_gram(), g, size)
                writer.append(make_measurement(step, save_gram=False))
            else:
                writer.append(make_measurement(step, gram=g))


def stored_gram(path):
    with h5py.File(path, "r") as f:
        return f["gram"][()]


# ---- blockwise equals whole ------------------------------------------------------------------------


@pytest.mark.parametrize("gram_dtype", ["float64", "float32"])
@pytest.mark.parametrize("n, size", [(8, 1), (8, 3), (8, 5), (8, 8), (8, 20), (13, 4), (600, 128)])
def test_blockwise_rows_equal_the_whole_array_path(tmp_path, gram_dtype, n, size):
    grams = [symmetric(n, seed) for seed in range(2)]
    write_run(tmp_path / "whole.h5", grams, blockwise=False, gram_dtype=gram_dtype)
    write_run(tmp_path / "blocks.h5", grams, blockwise=True, size=size, gram_dtype=gram_dtype)
    whole, blocks = stored_gram(tmp_path / "whole.h5"), stored_gram(tmp_path / "blocks.h5")
    assert whole.dtype == blocks.dtype == np.dtype(gram_dtype)
    np.testing.assert_array_equal(blocks, whole)
    expected = np.stack(grams).astype(gram_dtype).astype(np.float64)  # float32: the float32-cast matrix
    with open_run(tmp_path / "blocks.h5") as run:
        assert run.info.gram_dtype == gram_dtype and len(run) == 2
        series = run.series("gram")
        assert series.dtype == np.float64
        np.testing.assert_array_equal(series, expected)
        for i in range(2):
            got = run.gram(i)
            assert got.dtype == np.float64 and got.shape == (n, n)
            np.testing.assert_array_equal(got, expected[i])
            np.testing.assert_array_equal(run.measurement(i).gram, expected[i])
    if gram_dtype == "float64":
        np.testing.assert_array_equal(expected, np.stack(grams))  # exact


def test_only_upper_blocks_are_given_and_the_lower_triangle_comes_out_right(tmp_path):
    n, g = 10, symmetric(10)
    path = tmp_path / "run.h5"
    with RunWriter.create(path, make_info(n=n)) as writer:
        row = writer.begin_gram()
        ranges = [(0, 1), (1, 4), (4, 9), (9, 10)]  # uneven blocks
        for i, (a, b) in enumerate(ranges):
            for c, d in ranges[i:]:
                assert a <= c
                assert row.missing() > 0
                row.write(a, c, g[a:b, c:d])
        assert row.missing() == 0
        writer.append(make_measurement(0))
        # A lower block works too (its transpose is the upper one).
        row = writer.begin_gram()
        row.write(0, 0, g[:4, :4])
        row.write(4, 0, g[4:, :4])
        row.write(4, 4, g[4:, 4:])
        writer.append(make_measurement(1))
    with open_run(path) as run:
        for i in (0, 1):
            got = run.gram(i)
            np.testing.assert_array_equal(np.tril(got, -1), np.tril(g, -1))
            np.testing.assert_array_equal(got, g)


# ---- the layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gram_dtype", ["float64", "float32"])
def test_gram_is_stored_in_checksummed_square_tiles_of_its_dtype(tmp_path, gram_dtype):
    path = tmp_path / "run.h5"
    write_run(path, [symmetric(600)], blockwise=True, size=250, gram_dtype=gram_dtype)
    with h5py.File(path, "r") as f:
        ds = f["gram"]
        assert ds.chunks == (1, 200, 200) and ds.fletcher32 and ds.dtype == np.dtype(gram_dtype)
        assert ds.maxshape == (None, 600, 600) and np.isnan(ds.fillvalue)
        assert f.attrs["gram_dtype"] == gram_dtype
        assert ds.id.get_num_chunks() == 9  # one row, 3 x 3 tiles
        assert [d[0].name for d in ds.dims] == ["/measurement", "/probe", "/probe_j"]
    tiles = [gram_tile(n) for n in (1, 8, 256, 257, 600, 1024, 1025, 20_000, 23_171)]
    assert tiles == [1, 8, 256, 129, 200, 256, 205, 254, 255]
    for n in (1, 255, 257, 1000, 4097, 20_000):
        c = gram_tile(n)
        tiles = -(-n // c)
        assert c <= 256 and tiles * c - n < tiles


def test_gram_dtype_is_validated():
    assert make_info(gram_dtype=np.float32).gram_dtype == "float32"
    assert make_info(gram_dtype=np.dtype("float64")).gram_dtype == "float64"
    assert make_info().gram_dtype == "float64"
    with pytest.raises(ValueError, match=r"Received: gram_dtype='float16'; expected 'float64' \(the default"):
        make_info(gram_dtype="float16")
    with pytest.raises(TypeError, match=r"Received: gram_dtype=None of type NoneType; expected 'float64'"):
        make_info(gram_dtype=None)
    with pytest.raises(ValueError, match="Pass gram_dtype='float64' or gram_dtype='float32'"):
        make_info(gram_dtype="int64")


# ---- the rules of writing --------------------------------------------------------------------------


def test_a_failed_measurement_leaves_exactly_the_committed_rows(tmp_path):
    n, path = 9, tmp_path / "run.h5"
    g0, bad, g1 = symmetric(n, 0), np.full((n, n), 7.0), symmetric(n, 1)
    with RunWriter.create(path, make_info(n=n)) as writer:
        write_upper_blocks(writer.begin_gram(), g0, 4)
        writer.append(make_measurement(0))
        failed = writer.begin_gram()  # the measurement fails after some blocks
        failed.write(0, 0, bad[:4, :4])
        failed.write(0, 4, bad[:4, 4:])
        writer._file.flush()
        assert swmr_read(path)[:2] == (1, 2)  # gram is one row longer; the row is not counted
        row = writer.begin_gram()  # the next measurement starts over
        assert failed.state == "discarded" and row.row == 1
        with pytest.raises(ValueError, match="which was discarded .* expected the row begun last"):
            failed.write(4, 4, bad[4:, 4:])
        assert row.missing() == n * n  # nothing of the failed row remains
        write_upper_blocks(row, g1, 2)
        writer.append(make_measurement(1))
        assert row.state == "committed"
        with pytest.raises(ValueError, match="which was already appended"):
            row.write(0, 0, g1[:1, :1])
        # A measurement that fails inside the row's context manager discards the row.
        with pytest.raises(RuntimeError, match="engine failed"):
            with writer.begin_gram() as row:
                row.write(0, 0, bad)
                raise RuntimeError("engine failed")
        assert row.state == "discarded" and writer._datasets["gram"].shape[0] == 2
        # A row begun and never appended is discarded by close().
        writer.begin_gram().write(0, 0, bad)
    with h5py.File(path, "r") as f:
        assert {f[name].shape[0] for name in series_names(True)} == {2}
    with open_run(path) as run:
        assert len(run) == 2 and run.tags["step"].tolist() == [0, 1]
        np.testing.assert_array_equal(run.gram(0), g0)
        np.testing.assert_array_equal(run.gram(1), g1)


READER = """
import json, sys
import h5py
import numpy as np
from keras_stiffness.store.reader import open_run
with open_run(sys.argv[1]) as run:
    n = len(run)
    out = {"rows": n, "swmr": run._swmr, "sums": [float(np.nansum(run.gram(i))) for i in range(n)]}
with h5py.File(sys.argv[1], "r", swmr=True) as f:
    out["gram_rows"] = f["gram"].shape[0]
print(json.dumps(out))
"""


def swmr_read(path):
    """(rows counted, rows of gram, sum of each counted row's Gram) as a SWMR reader in another process sees them."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", READER, str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["swmr"]
    return out["rows"], out["gram_rows"], out["sums"]


def test_a_swmr_reader_never_sees_a_partial_row(tmp_path):
    n, path = 12, tmp_path / "live.h5"
    grams = [symmetric(n, seed) for seed in range(3)]
    with RunWriter.create(path, make_info(n=n)) as writer:
        write_upper_blocks(writer.begin_gram(), grams[0], 5)
        writer.append(make_measurement(0))
        row = writer.begin_gram()
        row.write(0, 0, grams[1][:5, :5])
        writer._file.flush()
        assert swmr_read(path) == (1, 2, [pytest.approx(grams[0].sum())])
        write_upper_blocks(row, grams[1], 5)  # every entry written, not appended yet
        writer._file.flush()
        assert swmr_read(path)[:2] == (1, 2)
        writer.append(make_measurement(1))
        assert swmr_read(path) == (2, 2, [pytest.approx(g.sum()) for g in grams[:2]])
        writer.append(make_measurement(2, gram=grams[2]))  # the whole-array path still works
        assert swmr_read(path) == (3, 3, [pytest.approx(g.sum()) for g in grams])


def test_appending_needs_exactly_one_complete_gram(tmp_path):
    n, g = 6, symmetric(6)
    with RunWriter.create(tmp_path / "g.h5", make_info(n=n)) as writer:
        with pytest.raises(
            MeasurementMismatchError, match=r"gram=None; .*save_gram=True \(or write .*RunWriter.begin_gram"
        ):
            writer.append(make_measurement(0))
        row = writer.begin_gram()
        row.write(0, 0, g[:3, :3])
        row.write(3, 3, g[3:, 3:])
        with pytest.raises(
            MeasurementMismatchError,
            match=r"with 18 of its 36 entries never written \(the first at row 0, column 3\); expected every",
        ):
            writer.append(make_measurement(0))
        with pytest.raises(MeasurementMismatchError, match="while a Gram row written blockwise .* expected one"):
            writer.append(make_measurement(0, gram=g))
        assert writer.n_rows == 0 and row.state == "open"  # nothing written, the row still open
        row.write(0, 3, g[:3, 3:])
        writer.append(make_measurement(0))
        writer.append(make_measurement(1, gram=g))
        row = writer.begin_gram()
        row.discard()
        assert row.state == "discarded" and writer._datasets["gram"].shape[0] == 2
        writer.append(make_measurement(2, gram=g))  # after a discard, the whole array again
    with open_run(tmp_path / "g.h5") as run:
        assert len(run) == 3 and all(np.array_equal(run.gram(i), g) for i in range(3))
    with RunWriter.create(tmp_path / "n.h5", helper.make_info()) as writer:
        with pytest.raises(MeasurementMismatchError, match="begin_gram\\(\\) on .* a run created with save_gram=False"):
            writer.begin_gram()
    with pytest.raises(ValueError, match=r"Received: begin_gram\(\) on a closed RunWriter"):
        writer.begin_gram()
    with open_run(tmp_path / "n.h5") as run:
        with pytest.raises(ValueError, match="Received: gram\\(\\) of a run written with save_gram=False"):
            run.gram(0)


BAD_BLOCKS = [
    ((0, 0, np.zeros(4)), MeasurementMismatchError, r"dtype float64 and shape \(4,\); expected a 2-D array"),
    ((0, 0, np.zeros((2, 2, 1))), MeasurementMismatchError, r"shape \(2, 2, 1\); expected a 2-D"),
    ((0, 0, np.zeros((0, 3))), MeasurementMismatchError, r"shape \(0, 3\); expected a 2-D array .* h, w >= 1"),
    ((0, 0, np.array([["a"]])), MeasurementMismatchError, "dtype <U1 .* expected a 2-D array of numbers"),
    ((6, 0, np.zeros((3, 3))), MeasurementMismatchError, r"covering rows 6:9 .*inside the \(8, 8\) Gram"),
    ((0, 7, np.zeros((1, 2))), MeasurementMismatchError, r"columns 7:9; expected it inside"),
    ((-1, 0, np.zeros((1, 1))), MeasurementMismatchError, r"at r0=-1, c0=0"),
    ((0, 2, np.zeros((4, 4))), MeasurementMismatchError, "ranges that overlap without being equal"),
    ((0, 0, np.zeros((2, 3))), MeasurementMismatchError, "ranges that overlap without being equal"),
    ((0.0, 0, np.zeros((1, 1))), TypeError, r"Received: r0=0.0; expected an int >= 0"),
    ((0, True, np.zeros((1, 1))), TypeError, r"Received: c0=True; expected an int"),
]


@pytest.mark.parametrize("args, error, message", BAD_BLOCKS)
def test_a_bad_block_is_an_error_before_anything_is_written(tmp_path, args, error, message):
    path = tmp_path / "run.h5"
    with RunWriter.create(path, make_info()) as writer:
        row = writer.begin_gram()
        writer._file.flush()
        before = path.read_bytes()
        with pytest.raises(error, match=message):
            row.write(*args)
        assert path.read_bytes() == before
        assert row.missing() == helper.N**2 and row.state == "open"
        writer._file.flush()
        assert np.isnan(writer._datasets["gram"][0]).all()
        write_upper_blocks(row, symmetric(helper.N), 4)  # the row is still usable
        writer.append(make_measurement(0))


# ---- reading ---------------------------------------------------------------------------------------


def test_reading_a_block_reads_only_its_tiles(tmp_path):
    n, path = 600, tmp_path / "run.h5"
    grams = [symmetric(n, 0), symmetric(n, 1)]
    write_run(path, grams, blockwise=True, size=200, gram_dtype="float32")
    expected = [g.astype(np.float32).astype(np.float64) for g in grams]
    with open_run(path) as run:
        block = run.gram(-1, rows=slice(100, 450), cols=slice(290, 310))
        assert block.dtype == np.float64 and block.shape == (350, 20)
        np.testing.assert_array_equal(block, expected[1][100:450, 290:310])
        np.testing.assert_array_equal(run.gram(0, rows=slice(5, 6)), expected[0][5:6])
        np.testing.assert_array_equal(run.gram(0, cols=slice(-3, None)), expected[0][:, -3:])
        assert run.measurement(0, gram=False).gram is None
        with pytest.raises(TypeError, match=r"Received: rows=\[1, 2\]; expected a slice of probes"):
            run.gram(0, rows=[1, 2])
        with pytest.raises(IndexError, match="Received: i=2; expected an int with -2 <= i < 2"):
            run.gram(2)
    # Damage the first tile of row 0: a block elsewhere still reads, one touching that tile fails.
    with h5py.File(path, "r") as f:
        chunk = f["gram"].id.get_chunk_info_by_coord((0, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset + 64)
        word = fh.read(2)
        fh.seek(chunk.byte_offset + 64)
        fh.write(bytes(b ^ 0x5A for b in word))
    with open_run(path) as run:
        np.testing.assert_array_equal(run.gram(0, rows=slice(200, 600)), expected[0][200:])
        np.testing.assert_array_equal(run.gram(0, rows=slice(0, 200), cols=slice(200, 600)), expected[0][:200, 200:])
        np.testing.assert_array_equal(run.gram(1), expected[1])
        with pytest.raises(RunDamagedError, match="whose dataset 'gram' cannot be read intact"):
            run.gram(0, rows=slice(199, 201), cols=slice(190, 210))


# ---- resume and older files ------------------------------------------------------------------------


def test_resume_checks_gram_dtype(tmp_path):
    path, g = tmp_path / "run.h5", symmetric(helper.N)
    write_run(path, [g, g], blockwise=True, gram_dtype="float32")
    before = path.read_bytes()
    with pytest.raises(RunMismatchError, match="gram_dtype: file has 'float32', received 'float64'"):
        RunWriter.resume(path, make_info(), from_step=1)
    assert path.read_bytes() == before
    with RunWriter.resume(path, make_info(gram_dtype="float32"), from_step=1) as writer:
        assert writer.n_rows == 1 and writer.info.gram_dtype == "float32"
        write_upper_blocks(writer.begin_gram(), 2 * g, 3)
        writer.append(make_measurement(1))
    with open_run(path) as run:
        assert run.info.gram_dtype == "float32" and len(run) == 2
        np.testing.assert_array_equal(run.gram(1), (2 * g).astype(np.float32))
    # Without save_gram the storage type does not matter.
    plain = tmp_path / "plain.h5"
    RunWriter.create(plain, helper.make_info(gram_dtype="float32")).close()
    with RunWriter.resume(plain, helper.make_info(), from_step=0):
        pass


def test_a_crashed_writer_with_a_begun_row_resumes_to_the_committed_rows(tmp_path, monkeypatch):
    """The crash copy (``files.rewrite``) copies a Gram row in slabs (forced small here)."""
    monkeypatch.setattr(store_files, "_COPY_BYTES", 100)
    path, grams = tmp_path / "run.h5", [symmetric(helper.N, s) for s in range(3)]
    write_run(path, grams[:2], blockwise=True)
    with h5py.File(path, "r+") as f:  # what a crash during the next blockwise row leaves
        f["gram"].resize(3, axis=0)
        f["gram"][2, :3, :3] = 5.0
        f.attrs["format_version"] = np.int64(1)  # resume rewrites (the path a crashed file takes)
    with open_run(path) as run:
        assert len(run) == 2
    with RunWriter.resume(path, make_info(), from_step=5) as writer:
        assert writer.n_rows == 2
        write_upper_blocks(writer.begin_gram(), grams[2], 3)
        writer.append(make_measurement(2))
    with open_run(path) as run, h5py.File(path, "r") as f:
        assert f["gram"].chunks == (1, helper.N, helper.N) and f.attrs["format_version"] == 3
        np.testing.assert_array_equal(run.series("gram"), np.stack(grams))


def make_old_layout(path, grams):
    """A file as written before this change: gram chunked in whole rows, no gram_dtype attribute."""
    write_run(path, grams, blockwise=False)
    with h5py.File(path, "r+") as f:
        data = f["gram"][()]
        del f.attrs["gram_dtype"]
        del f["gram"]
        n = data.shape[1]
        ds = f.create_dataset(
            "gram",
            data=data,
            maxshape=(None, n, n),
            chunks=(4, n, n),
            fillvalue=np.nan,
            fletcher32=True,
        )
        for i, axis in enumerate(("measurement", "probe", "probe_j")):
            ds.dims[i].attach_scale(f[axis])


def test_files_without_the_attribute_read_as_float64(tmp_path):
    grams = [symmetric(helper.N, s) for s in range(2)]
    path = tmp_path / "old.h5"
    make_old_layout(path, grams)
    with open_run(path) as run:
        assert run.info.gram_dtype == "float64"
        np.testing.assert_array_equal(run.gram(1, rows=slice(2, 5), cols=slice(0, 3)), grams[1][2:5, :3])
        np.testing.assert_array_equal(run.measurement(0).gram, grams[0])
    with RunWriter.resume(path, make_info(), from_step=1) as writer:  # closed cleanly: shortened in place
        write_upper_blocks(writer.begin_gram(), grams[0], 3)
        writer.append(make_measurement(1))
    with open_run(path) as run:
        np.testing.assert_array_equal(run.series("gram"), np.stack([grams[0], grams[0]]))
    copy = tmp_path / "v1.h5"
    shutil.copy(V1_RUN, copy)
    with open_run(copy) as run:
        assert run.format_version == 1 and run.info.gram_dtype == "float64" and not run.info.save_gram
        assert run.measurement(-1, gram=False).gram is None
    assert copy.read_bytes() == V1_RUN.read_bytes()


# ---- the size limit --------------------------------------------------------------------------------


def test_the_size_limit_and_its_flag(tmp_path):
    assert GRAM_BYTES_LIMIT == 2 * 2**30
    assert gram_bytes(16_384) == GRAM_BYTES_LIMIT and gram_bytes(23_170, "float32") == 4 * 23_170**2
    assert check_gram_size(16_384) == GRAM_BYTES_LIMIT
    assert check_gram_size(23_170, "float32") == 4 * 23_170**2
    with pytest.raises(ValueError) as caught:
        check_gram_size(20_000)
    message = str(caught.value)
    for part in (
        "Received: save_gram with N=20,000 probes and gram_dtype='float64'",
        "takes 2.98 GiB (3,200,000,000 bytes) per measurement",
        "expected at most GRAM_BYTES_LIMIT = 2 GiB per measurement (up to 16,384 probes in float64)",
        "Pass large_gram=True to store it anyway",
        "gram_dtype='float32' (half the size; up to 23,170 probes)",
        "use fewer probes",
    ):
        assert part in message, (part, message)
    with pytest.raises(ValueError, match="N=23,171 probes and gram_dtype='float32'.*large_gram=True") as caught:
        check_gram_size(23_171, np.float32)
    assert "half the size" not in str(caught.value)
    assert check_gram_size(20_000, large_gram=True) == 3_200_000_000
    with pytest.raises(TypeError, match="Received: large_gram='yes'; expected True or False"):
        check_gram_size(10, large_gram="yes")
    # The writer checks it when a run is created, before any file exists.
    path = tmp_path / "big.h5"
    with pytest.raises(ValueError, match="N=20,000 probes .* Pass large_gram=True"):
        RunWriter.create(path, make_info(n=20_000))
    assert not path.exists() and os.listdir(tmp_path) == []
    RunWriter.create(path, make_info(n=20_000, save_gram=False)).close()  # no Gram, no limit
    with RunWriter.create(path, make_info(n=20_000), overwrite=True, large_gram=True) as writer:
        ds = writer._datasets["gram"]
        assert ds.shape == (0, 20_000, 20_000) and ds.chunks == (1, 254, 254)
        with RunWriter.create(tmp_path / "f32.h5", make_info(n=20_000, gram_dtype="float32")) as small:
            assert small._datasets["gram"].dtype == np.float32  # 1.49 GiB: under the limit
    with RunWriter.resume(path, make_info(n=20_000), from_step=0):  # not checked again
        pass
