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

The Gram matrix, blockwise (runs with ``save_gram``): :meth:`RunWriter.begin_gram` returns a
:class:`GramRow` that writes blocks of the next row's ``(N, N)`` matrix straight into the file (each
off-diagonal block with its transpose, so only the blocks ``(I, J)`` with ``I <= J`` are given), then
:meth:`RunWriter.append` of the Measurement (with ``gram=None``) checks that every entry was written
and commits the row. Until then only ``gram`` is one row longer than the other series, so readers do
not see the row; a row that is never appended (the measurement failed) is discarded by the next
:meth:`~RunWriter.begin_gram`, by :meth:`GramRow.discard` or by :meth:`~RunWriter.close`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, List, Optional, Tuple

import h5py
import numpy as np

from keras_stiffness.math.record import Measurement
from keras_stiffness.store.checks import check_info, check_resumable, row_arrays
from keras_stiffness.store.files import (
    check_not_in_use,
    hold_shared_lock,
    new_file,
    open_for_reading,
    open_with_chunk_cache,
    publish,
    release_lock,
    remove_quietly,
    rewrite,
    shorten_in_place,
    utc_now,
)
from keras_stiffness.store.layout import (
    FORMAT_VERSION,
    MeasurementMismatchError,
    PathLike,
    RunInfo,
    check_gram_size,
    read_dataset,
    series_names,
    write_layout,
)
from keras_stiffness.validation import check_writable, is_int
from keras_stiffness.version import __version__

__all__ = ["GramRow", "RunWriter"]

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
        # gram is written blockwise: its own chunk cache holds the tiles a block cuts across (HDF5
        # keeps the cache of a dataset's first opening, and nothing here opened it before).
        self._datasets = {
            name: open_with_chunk_cache(file, name) if name == "gram" else file[name]
            for name in series_names(info.save_gram)
        }
        self._gram_row: Optional[GramRow] = None
        self._lock_fd = hold_shared_lock(path)

    @classmethod
    def create(cls, path: PathLike, info: RunInfo, *, overwrite: bool = False, large_gram: bool = False) -> "RunWriter":
        """Create a new, empty run file and return its writer.

        Args:
            path: File to create. Its directory must exist and be writable.
            info: What the run measures; fixes every axis of the file.
            overwrite: Replace an existing file (only after the new one has been created).
            large_gram: With ``info.save_gram``, allow a Gram matrix larger than
                :data:`~keras_stiffness.store.layout.GRAM_BYTES_LIMIT` (2 GiB per measurement:
                N > 16,384 probes in float64, > 23,170 in float32); see
                :func:`~keras_stiffness.store.layout.check_gram_size`.

        Returns:
            A writer with ``n_rows == 0``.

        Raises:
            TypeError: ``info`` is not a RunInfo.
            ValueError: the Gram matrix is over the size limit and ``large_gram`` is False.
            FileExistsError: ``path`` exists and ``overwrite`` is False.
            FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError: ``path``
                cannot be created there.
            RunInUseError: ``overwrite=True`` but another process has the old file open.
        """
        path = os.fspath(path)
        check_info(info)
        if info.save_gram:
            check_gram_size(info.n_probes, info.gram_dtype, large_gram=large_gram)
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

        The file must have the same probe set (hash), names, sizes and ``gram_dtype`` as ``info``
        (the Gram size limit is not checked again: it was when the run was created). A file closed
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
            RunMismatchError: probe hash, names, sizes or ``gram_dtype`` differ from ``info``.
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

    def begin_gram(self) -> "GramRow":
        """Start writing the next row's Gram matrix blockwise; :meth:`append` then commits the row.

        Write the blocks with :meth:`GramRow.write` (the upper blocks ``(I, J)``, ``I <= J``, are
        enough: each off-diagonal block is also written transposed), then append the row's
        Measurement with ``gram=None``. Readers see nothing of the row until that append completes.
        A row begun earlier and not appended (its measurement failed) is discarded first, so its
        entries are never read; its GramRow can no longer write.

        Returns:
            The :class:`GramRow` of row ``n_rows``; also a context manager that discards the row
            when its block exits with an exception.

        Raises:
            MeasurementMismatchError: the run was created with ``save_gram=False``.
            ValueError: the writer is closed.

        Example:
            >>> import os, tempfile
            >>> import numpy as np
            >>> from keras_stiffness.math.record import Measurement
            >>> info = RunInfo(class_names=["a", "b"], probe_labels=np.array([0, 1, 0]),
            ...                probe_indices=np.arange(3), probe_is_val=np.zeros(3, bool), probe_hash="h",
            ...                pair_sets=("train-train",), measures=("cos",), layers=(), spaces=(), bins=2,
            ...                metric="cosine", min_count=1, save_gram=True, config={},
            ...                gram_dtype="float32")
            >>> g = np.arange(9.0).reshape(3, 3); g = g + g.T  # a symmetric (N, N) matrix
            >>> tmp = tempfile.TemporaryDirectory(); path = os.path.join(tmp.name, "run.h5")
            >>> with RunWriter.create(path, info) as writer:
            ...     row = writer.begin_gram()
            ...     row.write(0, 0, g[:2, :2])  # a diagonal block
            ...     row.write(0, 2, g[:2, 2:])  # an off-diagonal block, also written as g[2:, :2]
            ...     row.write(2, 2, g[2:, 2:])
            ...     nan = float("nan")
            ...     writer.append(Measurement(step=0, epoch=0.0, train_loss=nan, val_loss=nan,
            ...         learning_rate=nan, wall_time=0.0, pair_sets=("train-train",), measures=("cos",),
            ...         class_matrix=np.zeros((1, 1, 2, 2)), class_pairs=np.zeros((1, 2, 2), int),
            ...         within=np.zeros((1, 1)), between=np.zeros((1, 1)), mean=np.zeros((1, 1)),
            ...         pairs=np.zeros(1, int), layers=(), layer_mean=np.zeros((0, 1, 1)),
            ...         layer_within=np.zeros((0, 1, 1)), layer_between=np.zeros((0, 1, 1)), spaces=(),
            ...         distance_edges=np.zeros((0, 3)), curve_mean=np.zeros((0, 1, 2)),
            ...         curve_count=np.zeros((0, 2), int), critical_length=np.zeros((0, 1)),
            ...         critical_length_fit=np.zeros((0, 1)), gram=None))
            >>> from keras_stiffness.store.reader import open_run
            >>> with open_run(path) as run:
            ...     bool(np.array_equal(run.gram(0), g)), run.gram(0, rows=slice(2, 3)).tolist()
            (True, [[8.0, 12.0, 16.0]])
            >>> tmp.cleanup()
        """
        self._check_open("begin_gram()")
        if not self.info.save_gram:
            raise MeasurementMismatchError(
                f"Received: begin_gram() on {self.path!r}, a run created with save_gram=False; expected a "
                "run that stores the Gram matrix. Create the run with save_gram=True, or do not write it."
            )
        self._discard_gram_row()
        ds = self._datasets["gram"]
        ds.resize(self._n + 1, axis=0)  # only gram is one row longer: readers count the shortest series
        self._gram_row = GramRow(self, self._n)
        return self._gram_row

    def _discard_gram_row(self) -> None:
        """Forget the begun Gram row, if any, and delete what the file holds past the committed rows."""
        if self._gram_row is not None:
            self._gram_row._state = "discarded"
            self._gram_row = None
        ds = self._datasets.get("gram")
        if ds is not None and ds.shape[0] > self._n:
            ds.resize(self._n, axis=0)  # deletes that row's tiles (one chunk holds one row)

    def _check_open(self, action: str) -> None:
        if self._file is None:
            raise ValueError(
                f"Received: {action} on a closed RunWriter for {self.path!r}; expected an open "
                "writer. Use RunWriter.resume(path, info, from_step=...) to continue the run."
            )

    def append(self, m: Measurement) -> None:
        """Check ``m`` against the run, append it as one row and flush it to disk.

        A measurement that does not fit is rejected before anything is written. With
        ``save_gram=True``, the row's Gram matrix is ``m.gram`` (the whole ``(N, N)`` array), or
        the Gram row written blockwise since :meth:`begin_gram` (then ``m.gram`` must be None, and
        every entry must have been written). ``m.gram`` is ignored in a run without ``save_gram``.

        Raises:
            TypeError: ``m`` is not a Measurement.
            MeasurementMismatchError: names, shapes or types differ from the run's RunInfo; or with
                ``save_gram``, neither ``m.gram`` nor a begun Gram row, both, or a begun row with
                entries not written.
            ValueError: the writer is closed, or ``m.step`` is lower than the last stored step.
        """
        self._check_open("append()")
        gram_row = self._gram_row
        row = row_arrays(m, self.info, gram_written=gram_row is not None)
        step = int(row["step"])
        if self._last_step is not None and step < self._last_step:
            raise ValueError(
                f"Received: Measurement with step={step}; expected step >= {self._last_step}, the "
                "last step stored. To measure earlier steps again, RunWriter.resume(path, info, "
                f"from_step={step})."
            )
        if gram_row is not None:
            gram_row._check_complete()
        elif "gram" in row:
            row["gram"] = row["gram"].astype(self.info.gram_dtype, copy=False)
        n = self._n
        row["measurement"] = np.int64(n)
        try:
            for name, ds in self._datasets.items():  # "measurement" and "step" come last
                if name == "gram" and gram_row is not None:
                    continue  # written blockwise; the dataset already has row n
                if name == "measurement":
                    self._file.flush()
                ds.resize(n + 1, axis=0)
                ds[n] = row[name]
            self._file.flush()
        except BaseException:
            self._gram_row = None
            if gram_row is not None:
                gram_row._state = "discarded"
            self._truncate(n)
            raise
        if gram_row is not None:
            gram_row._state = "committed"
            self._gram_row = None
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
        """Flush and close the file; calling it again does nothing.

        A Gram row begun with :meth:`begin_gram` and not appended is discarded.
        """
        if self._file is not None:
            try:
                try:
                    self._discard_gram_row()
                except Exception as exc:  # noqa: BLE001 - readers never count that row anyway
                    warnings.warn(
                        f"RunWriter: could not discard the unfinished Gram row of {self.path!r} "
                        f"({type(exc).__name__}: {exc}); readers do not see it (a row counts once every "
                        "series has it).",
                        RuntimeWarning,
                        stacklevel=2,
                    )
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


class GramRow:
    """The Gram matrix of the next row, written block by block; make one with :meth:`RunWriter.begin_gram`.

    Each :meth:`write` stores a block of the ``(N, N)`` matrix at once (converted to the run's
    ``gram_dtype``); :meth:`RunWriter.append` commits the row once every entry has been written. The
    writer keeps the list of blocks written (four integers each) to check that.

    Attributes:
        row: The row number the matrix will have (the writer's ``n_rows`` when it was begun).
        n_probes: ``N``.
        dtype: The storage type (``"float64"`` or ``"float32"``).
    """

    def __init__(self, writer: RunWriter, row: int) -> None:
        """Made by :meth:`RunWriter.begin_gram`."""
        self._writer = writer
        self.row = row
        self.n_probes = writer.info.n_probes
        self.dtype = writer.info.gram_dtype
        self._state = "open"  # then "committed" (appended) or "discarded"
        self._blocks: List[Tuple[int, int, int, int]] = []  # (r0, r1, c0, c1), transposes included

    def write(self, r0: int, c0: int, block: Any) -> None:
        """Write ``block`` at rows ``r0:r0+h`` and columns ``c0:c0+w`` of the matrix, and its transpose.

        A diagonal block (``r0 == c0`` and square) is written as given. An off-diagonal block, whose
        row and column ranges are disjoint, is also written transposed at rows ``c0:c0+w``, columns
        ``r0:r0+h`` (the matrix is symmetric), so the blocks ``(I, J)`` with ``I <= J`` of a partition
        of the probes fill the whole matrix. Writing an entry again replaces it.

        Args:
            r0: First row (probe) of the block, ``0 <= r0``.
            c0: First column (probe) of the block, ``0 <= c0``.
            block: ``(h, w)`` numbers, ``h, w >= 1``, with ``r0 + h <= N`` and ``c0 + w <= N``.

        Raises:
            MeasurementMismatchError: the block has the wrong shape or type, reaches outside the
                matrix, or its row and column ranges overlap without being equal; nothing is written.
            TypeError: ``r0`` or ``c0`` is not an integer.
            ValueError: the row was appended or discarded, or the writer is closed.
        """
        self._check_writable()
        for name, value in (("r0", r0), ("c0", c0)):
            if not is_int(value):
                raise TypeError(f"Received: {name}={value!r}; expected an int >= 0 (a probe number).")
        r0, c0, n = int(r0), int(c0), self.n_probes
        array = np.asarray(block)
        if array.ndim != 2 or 0 in array.shape or array.dtype.kind not in "biuf":
            raise MeasurementMismatchError(
                f"Received: a Gram block with dtype {array.dtype} and shape {array.shape}; expected a 2-D array "
                "of numbers of shape (h, w) with h, w >= 1: the Gram entries of probes r0..r0+h-1 (rows) "
                "and c0..c0+w-1 (columns)."
            )
        h, w = array.shape
        if r0 < 0 or c0 < 0 or r0 + h > n or c0 + w > n:
            raise MeasurementMismatchError(
                f"Received: a Gram block of shape ({h}, {w}) at r0={r0}, c0={c0}, covering rows {r0}:{r0 + h} "
                f"and columns {c0}:{c0 + w}; expected it inside the ({n}, {n}) Gram matrix "
                f"(0 <= r0, r0 + h <= {n}, 0 <= c0, c0 + w <= {n})."
            )
        diagonal = r0 == c0 and h == w
        if not diagonal and r0 < c0 + w and c0 < r0 + h:
            raise MeasurementMismatchError(
                f"Received: a Gram block covering rows {r0}:{r0 + h} and columns {c0}:{c0 + w}, ranges that "
                "overlap without being equal; expected a diagonal block (the same probe range for rows and "
                "columns) or an off-diagonal one (disjoint ranges; its transpose is written too). Split "
                "the block where its ranges meet."
            )
        values = np.ascontiguousarray(array, dtype=self.dtype)
        ds = self._writer._datasets["gram"]
        ds[self.row, r0 : r0 + h, c0 : c0 + w] = values
        self._blocks.append((r0, r0 + h, c0, c0 + w))
        if not diagonal:
            ds[self.row, c0 : c0 + w, r0 : r0 + h] = np.ascontiguousarray(values.T)
            self._blocks.append((c0, c0 + w, r0, r0 + h))

    def missing(self) -> int:
        """How many entries of the ``(N, N)`` matrix no :meth:`write` has covered yet (0: complete)."""
        return self._coverage()[0]

    def discard(self) -> None:
        """Give the row up: what was written is deleted and never read; this GramRow can no longer write.

        Does nothing when the row was already appended or discarded.
        """
        if self._state == "open" and self._writer._gram_row is self and not self._writer.closed:
            self._writer._discard_gram_row()
        if self._state == "open":
            self._state = "discarded"

    @property
    def state(self) -> str:
        """``"open"`` (being written), ``"committed"`` (appended) or ``"discarded"``."""
        return self._state

    def _check_writable(self) -> None:
        if self._state != "open" or self._writer.closed:
            why = {
                "committed": "was already appended (begin_gram() starts the next row)",
                "discarded": "was discarded (by discard(), a later begin_gram(), a failed append or close())",
            }.get(self._state, "belongs to a closed RunWriter")
            raise ValueError(
                f"Received: a write to the Gram row {self.row} of {self._writer.path!r}, which {why}; expected "
                "the row begun last. Call writer.begin_gram() and write the row's blocks again."
            )

    def _coverage(self) -> Tuple[int, Optional[Tuple[int, int]]]:
        """Entries not written yet, and the first of them (row, column) or None.

        The written rectangles are marked on the grid of their distinct boundaries: exact, with
        memory quadratic in the number of distinct block edges, not in N.
        """
        n = self.n_probes
        if not self._blocks:
            return n * n, (0, 0)
        blocks = np.array(self._blocks, dtype=np.int64)
        edges = np.unique(np.concatenate([[0, n], blocks.ravel()]))
        index = np.searchsorted(edges, blocks)
        covered = np.zeros((len(edges) - 1,) * 2, dtype=bool)
        for a, b, c, d in index:
            covered[a:b, c:d] = True
        if covered.all():
            return 0, None
        sizes = np.diff(edges)
        missing = int(sizes @ (~covered).astype(np.int64) @ sizes)
        i, j = np.argwhere(~covered)[0]
        return missing, (int(edges[i]), int(edges[j]))

    def _check_complete(self) -> None:
        missing, first = self._coverage()
        if missing:
            n = self.n_probes
            raise MeasurementMismatchError(
                f"Received: append() of a Gram row written blockwise with {missing:,} of its {n * n:,} entries "
                f"never written (the first at row {first[0]}, column {first[1]}); expected every entry "
                "written. Write every block (I, J) with I <= J of a partition of the probes, then append; "
                "or begin_gram() again to start the row over."
            )

    def __enter__(self) -> "GramRow":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.discard()

    def __repr__(self) -> str:
        return f"<GramRow {self.row} of {self._writer.path!r}: {self._state}>"
