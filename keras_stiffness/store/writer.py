"""Writing a run file: :class:`RunWriter` appends one row per measurement (the reader is in ``reader.py``).

h5py and NumPy only (no TensorFlow). The layout, the :class:`RunInfo` record and the errors live in
:mod:`keras_stiffness.store.layout`; ``saved_runs/README.md`` documents the format. The checks of
files and measurements are in :mod:`keras_stiffness.store.checks`, the file, name and lock helpers in
:mod:`keras_stiffness.store.files`.

How the file stays readable while it grows (HDF5 SWMR, single writer / multiple readers):

- :meth:`RunWriter.create` builds the whole file under a temporary name in the target directory,
  switches it to SWMR mode, then gives it its final name. A half-made file never appears under the
  final name, and ``overwrite=True`` replaces an existing file only once the new one exists.
- :meth:`RunWriter.append` writes one row to every dataset, flushes, then writes ``measurement`` and
  ``step`` and flushes again. The reader counts rows as the shortest series, so a row is visible only
  once it is complete; a crash loses at most the row in progress.
- :func:`open_run` opens a closed file normally, and a file that is being written (or whose writer
  died) in SWMR read mode; :meth:`Run.refresh` picks up new rows.
- While a writer has the file, it holds a shared ``flock`` on it (as HDF5 readers do). Resuming or
  overwriting first checks that nobody holds the file, so a live writer is never clobbered.
- Every numeric dataset carries HDF5's Fletcher32 checksum (format version 2), so a damaged chunk
  fails to read (``RunDamagedError``) instead of giving other numbers. A SWMR reader can catch a
  chunk while the writer rewrites it in place and see a checksum failure that is not damage;
  :class:`~keras_stiffness.store.reader.Run` re-reads before it believes one.
- :meth:`RunWriter.resume` upgrades a file of an older format version: it rewrites it in the
  current format (as after a crash), so the file is all of one version.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import h5py
import numpy as np

from keras_stiffness.math.record import Measurement
from keras_stiffness.store.checks import check_info, check_resumable, row_arrays
from keras_stiffness.store.files import (
    check_not_in_use,
    hold_shared_lock,
    new_file,
    open_for_reading,
    publish,
    release_lock,
    remove_quietly,
    rewrite,
    shorten_in_place,
    utc_now,
)
from keras_stiffness.store.layout import FORMAT_VERSION, PathLike, RunInfo, read_dataset, series_names, write_layout
from keras_stiffness.validation import check_writable
from keras_stiffness.version import __version__

__all__ = ["RunWriter"]

#: How a user fixes "the run file already exists" when creating one with the writer.
EXISTS_FIX = "Pass overwrite=True to replace it, or use RunWriter.resume(path, info, from_step=...) to continue it."


class RunWriter:
    """Appends measurements to a run file, one flushed row at a time.

    Make one with :meth:`create` (a new file) or :meth:`resume` (continue an existing one); use it as
    a context manager or call :meth:`close`. Readers may open the file at any time with
    :func:`open_run`.

    Attributes:
        path: The run file.
        info: The run's :class:`RunInfo` (as stored in the file).

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> info = RunInfo(class_names=["a", "b"], probe_labels=np.array([0, 1, 0, 1]),
        ...                probe_indices=np.arange(4), probe_is_val=np.zeros(4, bool),
        ...                probe_hash="abc", pair_sets=("train-train",), measures=("sign", "cos"),
        ...                layers=("dense",), spaces=("input", "dense"), bins=5,
        ...                metric="cosine", min_count=1, save_gram=False, config={"epochs": 2})
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "run.h5")
        >>> with RunWriter.create(path, info) as writer:  # then writer.append(measurement) per row
        ...     writer.n_rows
        0
        >>> tmp.cleanup()
    """

    def __init__(self, file: h5py.File, path: str, info: RunInfo, n_rows: int, last_step: Optional[int]) -> None:
        """Wraps a file already in SWMR write mode; use :meth:`create` or :meth:`resume`."""
        self.path = path
        self.info = info
        self._file: Optional[h5py.File] = file
        self._n = n_rows
        self._last_step = last_step
        self._datasets = {name: file[name] for name in series_names(info.save_gram)}
        self._lock_fd = hold_shared_lock(path)

    @classmethod
    def create(cls, path: PathLike, info: RunInfo, *, overwrite: bool = False) -> "RunWriter":
        """Create a new, empty run file and return its writer.

        Args:
            path: File to create. Its directory must exist and be writable.
            info: What the run measures; fixes every axis of the file.
            overwrite: Replace an existing file (only after the new one has been created).

        Returns:
            A writer with ``n_rows == 0``.

        Raises:
            TypeError: ``info`` is not a RunInfo.
            FileExistsError: ``path`` exists and ``overwrite`` is False.
            FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError: ``path``
                cannot be created there.
            RunInUseError: ``overwrite=True`` but another process has the old file open.
        """
        path = os.fspath(path)
        check_info(info)
        check_writable(path, overwrite=overwrite, exists_fix=EXISTS_FIX)
        if overwrite and os.path.exists(path):
            check_not_in_use(path, "overwrite")
        file, tmp = new_file(path)
        try:
            write_layout(file, info, __version__)
            file.flush()
            file.swmr_mode = True
            publish(tmp, path, overwrite)
        except BaseException:
            file.close()
            remove_quietly(tmp)
            raise
        return cls(file, path, info, 0, None)

    @classmethod
    def resume(cls, path: PathLike, info: RunInfo, *, from_step: int) -> "RunWriter":
        """Continue a run: drop the rows with ``step >= from_step``, then append after the rest.

        The file must have the same probe set (hash), names and sizes as ``info``. A file closed
        cleanly is shortened in place; a file whose writer died (still marked as open by HDF5) is
        copied to a fresh file that then replaces it.

        A file of an older format version (1) is upgraded: its kept rows are copied into a fresh
        file of the current version (checksummed; ``seconds`` is NaN in the old rows), which then
        replaces it. Older keras_stiffness versions cannot read the upgraded file; keep a copy of
        the old one if they must. The ``resumed`` record notes ``from_format_version``.

        Args:
            path: An existing run file.
            info: The resumed run's RunInfo (compared with the stored one).
            from_step: First optimizer step that will be measured again.

        Returns:
            A writer whose ``n_rows`` counts the rows kept.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            NotARunError: the file is not a run.
            FormatVersionError: the file was written in a newer format version.
            RunDamagedError: a chunk that must be read fails its checksum.
            RunMismatchError: probe hash, names or sizes differ from ``info``.
            RunInUseError: another process (a writer or a reader) has the file open.
        """
        path = os.fspath(path)
        check_info(info)
        if isinstance(from_step, (bool, np.bool_)) or not isinstance(from_step, (int, np.integer)):
            raise TypeError(f"Received: from_step={from_step!r}; expected an int >= 0.")
        if from_step < 0:
            raise ValueError(f"Received: from_step={from_step}; expected an int >= 0.")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Received: path={path!r}, which does not exist; expected an existing run file to "
                "resume. Use RunWriter.create(path, info) to start a new run."
            )
        check_not_in_use(path, "resume")
        src, crashed = open_for_reading(path)
        try:
            stored, version = check_resumable(src, path, info)
            names = series_names(stored.save_gram, version)
            n = min(src[name].shape[0] for name in names)
            steps = read_dataset(src["step"], "step", slice(0, n))
            later = np.flatnonzero(steps >= from_step)
            keep = int(later[0]) if later.size else n
            record = {
                "time": utc_now(),
                "from_step": int(from_step),
                "rows_kept": keep,
                "rows_dropped": n - keep,
                "after_crash": crashed,
                "library_version": __version__,
                "from_format_version": version,
            }
            copy = crashed or version < FORMAT_VERSION
            if copy:
                file = rewrite(src, path, stored, keep, record)
        finally:
            src.close()
        if not copy:
            file = shorten_in_place(path, names, keep, record)
        return cls(file, path, stored, keep, int(steps[keep - 1]) if keep else None)

    @property
    def n_rows(self) -> int:
        """Rows (measurements) in the file."""
        return self._n

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._file is None

    def append(self, m: Measurement) -> None:
        """Check ``m`` against the run, append it as one row and flush it to disk.

        A measurement that does not fit is rejected before anything is written. ``m.gram`` is
        stored only when the run was created with ``save_gram=True`` (it is ignored otherwise).

        Raises:
            TypeError: ``m`` is not a Measurement.
            MeasurementMismatchError: names, shapes or types differ from the run's RunInfo.
            ValueError: the writer is closed, or ``m.step`` is lower than the last stored step.
        """
        if self._file is None:
            raise ValueError(
                f"Received: append() on a closed RunWriter for {self.path!r}; expected an open "
                "writer. Use RunWriter.resume(path, info, from_step=...) to continue the run."
            )
        row = row_arrays(m, self.info)
        step = int(row["step"])
        if self._last_step is not None and step < self._last_step:
            raise ValueError(
                f"Received: Measurement with step={step}; expected step >= {self._last_step}, the "
                "last step stored. To measure earlier steps again, RunWriter.resume(path, info, "
                f"from_step={step})."
            )
        n = self._n
        row["measurement"] = np.int64(n)
        try:
            for name, ds in self._datasets.items():  # "measurement" and "step" come last
                if name == "measurement":
                    self._file.flush()
                ds.resize(n + 1, axis=0)
                ds[n] = row[name]
            self._file.flush()
        except BaseException:
            self._truncate(n)
            raise
        self._n = n + 1
        self._last_step = step

    def _truncate(self, n: int) -> None:
        """Best effort after a failed append: shorten every series back to ``n`` rows."""
        try:
            for ds in self._datasets.values():
                if ds.shape[0] > n:
                    ds.resize(n, axis=0)
            self._file.flush()
        except Exception as exc:  # noqa: BLE001 - the append's own error is the one raised; say this too
            warnings.warn(
                f"RunWriter: could not shorten {self.path!r} back to {n} rows after a failed append "
                f"({type(exc).__name__}: {exc}). Readers still see only the {n} complete rows (a row "
                "counts once every series has it); resume or overwrite the file to clean it up.",
                RuntimeWarning,
                stacklevel=3,
            )

    def close(self) -> None:
        """Flush and close the file; calling it again does nothing."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._datasets = {}
                release_lock(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # Garbage collection may run during interpreter shutdown, when h5py can no longer close;
        # exceptions in __del__ are printed by Python, never raised, so close() is simply attempted.
        if getattr(self, "_file", None) is not None:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RunWriter {self.path!r}: {self._n} rows, {state}>"
