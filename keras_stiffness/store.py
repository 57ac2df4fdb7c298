"""The HDF5 run file: :class:`RunWriter` appends one row per measurement, :func:`open_run` reads.

h5py and NumPy only (no TensorFlow). The layout, the :class:`RunInfo` record and the errors live in
:mod:`keras_stiffness.store_layout` and are re-exported here; ``saved_runs/README.md`` documents the
format. The checks of files and measurements are in :mod:`keras_stiffness.store_checks`, the file,
name and lock helpers in :mod:`keras_stiffness.store_files`.

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
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterator, Optional, Tuple, Union

import h5py
import numpy as np

from keras_stiffness import __version__
from keras_stiffness.measurement import TAGS, Measurement
from keras_stiffness.store_checks import (
    _check_info, _read_info, check_format, check_resumable, measurement_row,
)
from keras_stiffness.store_files import (
    _check_not_in_use, check_target, _hold_shared_lock, _new_file, _now, _open_for_reading,
    _publish, _release_lock, _remove_quietly, _rewrite, _shorten_in_place,
)
from keras_stiffness.store_layout import (
    ARRAY_FIELDS, FORMAT, FORMAT_VERSION, FormatVersionError, MeasurementMismatchError,
    NotARunError, RunFileError, RunInfo, RunInUseError, RunMismatchError, attr_str,
    row_measurement, series_names, write_layout,
)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "RunInfo", "RunWriter", "Run", "open_run", "RunFileError",
    "NotARunError", "FormatVersionError", "RunMismatchError", "MeasurementMismatchError",
    "RunInUseError",
]

PathLike = Union[str, "os.PathLike[str]"]


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
        >>> path = os.path.join(tempfile.mkdtemp(), "run.h5")
        >>> with RunWriter.create(path, info) as writer:  # then writer.append(measurement) per row
        ...     writer.n_rows
        0
    """

    def __init__(self, file: h5py.File, path: str, info: RunInfo, n_rows: int,
                 last_step: Optional[int]) -> None:
        """Wraps a file already in SWMR write mode; use :meth:`create` or :meth:`resume`."""
        self.path = path
        self.info = info
        self._file: Optional[h5py.File] = file
        self._n = n_rows
        self._last_step = last_step
        self._datasets = {name: file[name] for name in series_names(info.save_gram)}
        self._lock_fd = _hold_shared_lock(path)

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
        _check_info(info)
        check_target(path, overwrite)
        if overwrite and os.path.exists(path):
            _check_not_in_use(path, "overwrite")
        file, tmp = _new_file(path)
        try:
            write_layout(file, info, __version__)
            file.flush()
            file.swmr_mode = True
            _publish(tmp, path, overwrite)
        except BaseException:
            file.close()
            _remove_quietly(tmp)
            raise
        return cls(file, path, info, 0, None)

    @classmethod
    def resume(cls, path: PathLike, info: RunInfo, *, from_step: int) -> "RunWriter":
        """Continue a run: drop the rows with ``step >= from_step``, then append after the rest.

        The file must have this format version and the same probe set (hash), names and sizes as
        ``info``. A file closed cleanly is shortened in place; a file whose writer died (still marked
        as open by HDF5) is copied to a fresh file that then replaces it.

        Args:
            path: An existing run file.
            info: The resumed run's RunInfo (compared with the stored one).
            from_step: First optimizer step that will be measured again.

        Returns:
            A writer whose ``n_rows`` counts the rows kept.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            NotARunError, FormatVersionError: the file is not a run of this format version.
            RunMismatchError: probe hash, names or sizes differ from ``info``.
            RunInUseError: another process (a writer or a reader) has the file open.
        """
        path = os.fspath(path)
        _check_info(info)
        if isinstance(from_step, (bool, np.bool_)) or not isinstance(from_step, (int, np.integer)):
            raise TypeError(f"Received: from_step={from_step!r}; expected an int >= 0.")
        if from_step < 0:
            raise ValueError(f"Received: from_step={from_step}; expected an int >= 0.")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Received: path={path!r}, which does not exist; expected an existing run file to "
                "resume. Use RunWriter.create(path, info) to start a new run."
            )
        _check_not_in_use(path, "resume")
        src, crashed = _open_for_reading(path)
        try:
            stored = check_resumable(src, path, info)
            names = series_names(stored.save_gram)
            n = min(src[name].shape[0] for name in names)
            steps = src["step"][:n]
            later = np.flatnonzero(steps >= from_step)
            keep = int(later[0]) if later.size else n
            record = {
                "time": _now(), "from_step": int(from_step), "rows_kept": keep,
                "rows_dropped": n - keep, "after_crash": crashed, "library_version": __version__,
            }
            if crashed:
                file = _rewrite(src, path, stored, keep, record)
        finally:
            src.close()
        if not crashed:
            file = _shorten_in_place(path, names, keep, record)
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
        row = measurement_row(m, self.info)
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
        except Exception:  # the original error is the one to report
            pass

    def close(self) -> None:
        """Flush and close the file; calling it again does nothing."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._datasets = {}
                _release_lock(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RunWriter {self.path!r}: {self._n} rows, {state}>"


def open_run(path: PathLike) -> "Run":
    """Open a run file for reading (also while a writer is appending to it).

    Example:
        >>> with open_run("saved_runs/digits_mlp.h5") as run:  # doctest: +SKIP
        ...     run.series("within").shape
        (21, 3, 2)
    """
    return Run(path)


class Run:
    """A run file opened for reading; a snapshot of its rows that :meth:`refresh` extends.

    The number of rows is the length of the shortest series, so a row a writer is still writing
    (or was writing when it crashed) is never shown.

    Attributes:
        path: The run file.
        format_version: Format version of the file.
        info: The run's :class:`RunInfo`, rebuilt from the file.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> info = RunInfo(class_names=["a", "b"], probe_labels=np.array([0, 1, 0, 1]),
        ...                probe_indices=np.arange(4), probe_is_val=np.zeros(4, bool),
        ...                probe_hash="abc", pair_sets=("train-train",), measures=("sign", "cos"),
        ...                layers=("dense",), spaces=("input", "dense"), bins=5,
        ...                metric="cosine", min_count=1, save_gram=False, config={"epochs": 2})
        >>> path = os.path.join(tempfile.mkdtemp(), "run.h5")
        >>> RunWriter.create(path, info).close()
        >>> with open_run(path) as run:
        ...     len(run), run.series("class_matrix").shape, run.config
        (0, (0, 1, 2, 2, 2), {'epochs': 2})
    """

    def __init__(self, path: PathLike) -> None:
        """Opens ``path``; prefer :func:`open_run`."""
        self.path = os.fspath(path)
        self._file, self._swmr = _open_for_reading(self.path)
        try:
            self.format_version = check_format(self._file, self.path)
            self.info = _read_info(self._file, self.path)
            self._datasets = {name: self._file[name] for name in series_names(self.info.save_gram)}
            self._n = self._count()
        except BaseException:
            self._file.close()
            raise

    def _count(self) -> int:
        return min(ds.shape[0] for ds in self._datasets.values())

    def _open(self) -> h5py.File:
        if self._file is None:
            raise ValueError(f"Received: a closed Run for {self.path!r}; expected an open one. "
                             "Call open_run(path) again.")
        return self._file

    def refresh(self) -> None:
        """Pick up rows appended since the file was opened (or last refreshed)."""
        self._open()
        if self._swmr:
            for ds in self._datasets.values():
                ds.refresh()
        self._n = self._count()

    @property
    def n_measurements(self) -> int:
        """Complete rows visible now (see :meth:`refresh`)."""
        return self._n

    def __len__(self) -> int:
        return self._n

    @property
    def config(self) -> dict:
        """The run configuration (a copy of ``info.config``)."""
        return json.loads(json.dumps(self.info.config))

    @property
    def pair_sets(self) -> Tuple[str, ...]:
        """The ``P`` pair set names."""
        return self.info.pair_sets

    @property
    def measures(self) -> Tuple[str, ...]:
        """The ``M`` measure names."""
        return self.info.measures

    @property
    def class_names(self) -> list:
        """The ``C`` class names."""
        return list(self.info.class_names)

    @property
    def layers(self) -> Tuple[str, ...]:
        """The ``L`` layer names."""
        return self.info.layers

    @property
    def spaces(self) -> Tuple[str, ...]:
        """The ``R`` representation space names."""
        return self.info.spaces

    @property
    def attrs(self) -> Dict[str, str]:
        """File attributes as text (``created``, ``library_version``, ``resumed``...)."""
        f = self._open()
        return {name: attr_str(f, name) for name in f.attrs}

    @property
    def tags(self) -> Dict[str, np.ndarray]:
        """``(T,)`` arrays by tag name: step (int64), epoch, train_loss, val_loss, ... (float64)."""
        return {name: self.series(name) for name in TAGS}

    def series(self, name: str) -> np.ndarray:
        """One per-row field stacked over the visible rows, e.g. ``"within"`` -> ``(T, P, M)``.

        Args:
            name: A tag (``"step"``...) or an array field of Measurement (``"class_matrix"``...).

        Raises:
            ValueError: unknown name, or ``"gram"`` in a run written without ``save_gram``.
        """
        self._open()
        if name not in self._datasets or name == "measurement":
            known = [n for n in TAGS + ARRAY_FIELDS if n in self._datasets]
            hint = " (this run was written with save_gram=False)" if name == "gram" else ""
            raise ValueError(f"Received: name={name!r}{hint}; expected one of {known}.")
        return self._datasets[name][: self._n]

    def measurement(self, i: int) -> Measurement:
        """Row ``i`` as a Measurement (negative ``i`` counts from the end).

        Raises:
            IndexError: ``i`` is out of range.
        """
        self._open()
        n = self._n
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(
                f"Received: i={i!r}; expected an int with {-n} <= i < {n} (the run has {n} "
                "measurements; call refresh() to see newer ones)."
            )
        return row_measurement(self._datasets, int(i) % n, self.info)

    def __iter__(self) -> Iterator[Measurement]:
        return (self.measurement(i) for i in range(self._n))

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Run {self.path!r}: {self._n} measurements>"
