"""Files, names and locks behind :mod:`keras_stiffness.store.writer`.

h5py, NumPy and the standard library only. These helpers create a run file under a temporary name
and publish it, open one for reading (normally, or in SWMR mode while a writer has it), copy or
shorten one when a run is resumed, and hold or test the ``flock`` that marks a file as in use. The
reasons behind them are in the docstring of :mod:`keras_stiffness.store.writer`.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Optional, Tuple

import h5py
import numpy as np

from keras_stiffness.store.layout import (
    FORMAT_VERSION,
    NotARunError,
    RunInfo,
    RunInUseError,
    attr_str,
    read_dataset,
    series_names,
    write_layout,
)
from keras_stiffness.version import __version__

try:  # POSIX advisory locks; elsewhere the in-use checks are skipped.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LIBVER = ("v110", "v110")
#: HDF5's message for a file whose writer is still running or died without closing it.
_OPEN_FOR_WRITE = "already open for write"
#: Rows copied at once when a crashed file is rewritten (bounded to about 16 MiB).
_COPY_BYTES = 16 * 2**20
#: HDF5 chunk cache of the writer's ``gram`` dataset: four float64 tiles of the largest edge
#: (layout.GRAM_TILE), fully written tiles evicted first (w0 = 1), so blocks that cut across tiles
#: update them in memory instead of reading and rewriting each tile per block (2-6x faster measured).
GRAM_CACHE_BYTES = 2 * 2**20
_GRAM_CACHE_SLOTS = 521


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_file(path: str) -> Tuple[h5py.File, str]:
    """A new HDF5 file under a unique temporary name next to ``path``."""
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a run file is an ordinary file
    try:
        return h5py.File(tmp, "w", libver=LIBVER), tmp
    except BaseException:
        remove_quietly(tmp)
        raise


def publish(tmp: str, path: str, overwrite: bool) -> None:
    """Give the finished temporary file its final name (atomically; never clobber unless asked)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path appeared meanwhile
    except FileExistsError as exc:
        raise FileExistsError(
            f"Received: path={path!r}, which was created by someone else meanwhile; expected a new "
            "file. Pass overwrite=True to replace it."
        ) from exc
    except OSError as exc:  # no hard links on this file system
        if os.path.lexists(path):
            raise FileExistsError(
                f"Received: path={path!r}, which already exists; expected a new "
                "file. Pass overwrite=True to replace it."
            ) from exc
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def open_for_reading(path: str) -> Tuple[h5py.File, bool]:
    """Open read-only; returns (file, opened in SWMR mode).

    A normal open comes first: SWMR read mode retries failed reads for a long time, so opening a
    truncated file that way can hang. Only a file HDF5 reports as open for writing (a live writer
    or one that died) is opened in SWMR mode.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Received: path={path!r}, which does not exist; expected a run file.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Received: path={path!r}, a directory; expected a run file.")
    if not h5py.is_hdf5(path):
        raise NotARunError(
            f"Received: {path!r}, which is not an HDF5 file; expected a keras_stiffness run file "
            "(.h5) written by RunWriter or StiffnessCallback."
        )
    try:
        return h5py.File(path, "r"), False
    except OSError as e:
        error = e
    if _OPEN_FOR_WRITE in str(error):
        try:
            return h5py.File(path, "r", swmr=True), True
        except OSError as e:
            raise NotARunError(
                f"Received: {path!r}, which HDF5 marks as open for writing but not in SWMR mode "
                f"({e}); expected a run file that is closed or being appended to. If a process is "
                "modifying it, try again when it is done; if that process died, clear the mark "
                f"with the HDF5 tool `h5clear -s {path}`."
            ) from e
    raise NotARunError(
        f"Received: {path!r}, which HDF5 cannot open ({error}); expected a complete run file. It "
        "may be truncated or damaged: copy it again, or re-create it."
    )


def rewrite(src: h5py.File, path: str, info: RunInfo, keep: int, record: dict) -> h5py.File:
    """Copy the first ``keep`` rows of ``src`` into a fresh file of the current format at ``path``.

    Used for a file whose writer died, and for a file of an older format version (which this
    upgrades): the copy has the current layout (checksums, every series), the attributes of ``src``
    and ``format_version = FORMAT_VERSION``. A series ``src`` lacks keeps its fill value (NaN) in
    the copied rows. A chunk of ``src`` that fails its checksum raises RunDamagedError (nothing is
    replaced).
    """
    file, tmp = new_file(path)
    try:
        write_layout(file, info, __version__)
        for name in src.attrs:
            file.attrs[name] = src.attrs[name]
        file.attrs["format_version"] = np.int64(FORMAT_VERSION)
        for name in series_names(info.save_gram):
            target = file[name]
            target.resize(keep, axis=0)
            if name not in src:  # a series newer than the file's format version
                continue
            _copy_rows(src[name], target, name, keep)
        _add_resume_record(file, record)
        file.flush()
        file.swmr_mode = True
        os.replace(tmp, path)
    except BaseException:
        file.close()
        remove_quietly(tmp)
        raise
    return file


def _copy_rows(source: h5py.Dataset, target: h5py.Dataset, name: str, keep: int) -> None:
    """Copy rows ``0:keep`` of ``source`` into ``target``, about ``_COPY_BYTES`` at a time.

    Rows larger than that (a Gram matrix) are copied in slabs along the row's first axis, each a whole
    number of the source's chunks along it, so a row is never held whole (unless its chunks are).
    """
    row_bytes = source.dtype.itemsize * int(np.prod(source.shape[1:]))
    if row_bytes <= _COPY_BYTES or source.ndim < 2:
        rows = max(1, _COPY_BYTES // max(1, row_bytes))
        for start in range(0, keep, rows):
            stop = min(keep, start + rows)
            target[start:stop] = read_dataset(source, name, slice(start, stop))
        return
    size = source.shape[1]
    slab = max(1, _COPY_BYTES // (row_bytes // size))
    step = source.chunks[1] if source.chunks else 1
    slab = max(step, slab // step * step)
    for i in range(keep):
        for start in range(0, size, slab):
            stop = min(size, start + slab)
            target[i, start:stop] = read_dataset(source, name, (i, slice(start, stop)))


def open_with_chunk_cache(file: h5py.File, name: str, nbytes: int = GRAM_CACHE_BYTES) -> h5py.Dataset:
    """Open dataset ``name`` of ``file`` with its own HDF5 chunk cache of ``nbytes`` (w0 = 1)."""
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(_GRAM_CACHE_SLOTS, nbytes, 1.0)
    return h5py.Dataset(h5py.h5d.open(file.id, name.encode("utf-8"), dapl))


def shorten_in_place(path: str, names: Tuple[str, ...], keep: int, record: dict) -> h5py.File:
    """Open a cleanly closed run for writing, keep its first ``keep`` rows, enter SWMR mode."""
    file = h5py.File(path, "r+", libver=LIBVER)
    try:
        for name in names:
            file[name].resize(keep, axis=0)
        _add_resume_record(file, record)
        file.flush()
        file.swmr_mode = True
    except BaseException:
        file.close()
        raise
    return file


def _add_resume_record(f: h5py.File, record: dict) -> None:
    history = json.loads(attr_str(f, "resumed")) if "resumed" in f.attrs else []
    f.attrs["resumed"] = json.dumps(history + [record])


def check_not_in_use(path: str, action: str) -> None:
    """Raise RunInUseError if another process (writer or HDF5 reader) holds a lock on ``path``."""
    if fcntl is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise RunInUseError(
            f"Received: {action} of {path!r}, which is open elsewhere (a writer still running, "
            "or a reader, maybe in this process); expected a file nobody is using. Stop that "
            "writer or close the reader, then try again."
        ) from exc
    except OSError:  # locks unsupported on this file system
        pass
    finally:
        os.close(fd)  # also releases the lock


def hold_shared_lock(path: str) -> Optional[int]:
    """A shared lock that marks the file as in use while this writer lives (best effort)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        pass
    return fd


def release_lock(fd: Optional[int]) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
