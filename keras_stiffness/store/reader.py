"""Reading a run file: :func:`open_run` gives a :class:`Run`, also while a writer is appending to it.

A file that is being written (or whose writer died) is opened in SWMR read mode, a closed one
normally; :meth:`Run.refresh` picks up rows appended since. h5py and NumPy only.

Damage: from format version 2 every numeric chunk carries a Fletcher32 checksum, and a read that
fails it raises :class:`~keras_stiffness.store.layout.RunDamagedError` naming the file and the
dataset (from :func:`open_run` for the header datasets, from :meth:`Run.series`, :attr:`Run.tags`
and :meth:`Run.measurement` for the rows they read). In SWMR mode a failed read is first retried a
few times after a refresh: the writer rewrites a chunk in place when it appends to it, and a read
that overlaps that rewrite fails its checksum without any damage. Files of format version 1 have
no checksums and no ``seconds`` series (it reads as NaN).

The Gram matrix (runs with ``save_gram``) reads as float64 whatever its storage type
(``info.gram_dtype``): whole with :meth:`Run.series` (all rows) or :meth:`Run.measurement`, or one
row, or a block of one row, with :meth:`Run.gram`, which reads only the tiles the block touches.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import h5py
import numpy as np

from keras_stiffness.math.record import COST_TAGS, TAGS, Measurement
from keras_stiffness.store.checks import check_format, load_info
from keras_stiffness.store.files import open_for_reading
from keras_stiffness.store.layout import (
    ARRAY_FIELDS,
    NotARunError,
    PathLike,
    attr_str,
    damaged_error,
    missing_series,
    row_measurement,
    series_names,
)

__all__ = ["Run", "open_run"]

#: In SWMR mode, how often a read that fails its checksum is retried (after a refresh) before the
#: file is called damaged, and the pause before the k-th retry (``k * _RETRY_PAUSE`` seconds).
_SWMR_RETRIES = 5
_RETRY_PAUSE = 0.01


def open_run(path: PathLike) -> "Run":
    """Open a run file for reading (also while a writer is appending to it).

    Raises:
        FileNotFoundError, IsADirectoryError: no file at ``path``.
        NotARunError: not a run file (not HDF5, truncated, another kind of HDF5 file).
        FormatVersionError: written by a newer keras_stiffness.
        RunDamagedError: a header dataset (probe labels...) fails its checksum.

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
        format_version: Format version of the file (1 or 2; a version 1 file reads ``seconds`` as NaN).
        info: The run's :class:`RunInfo`, rebuilt from the file.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> from keras_stiffness.store.layout import RunInfo
        >>> from keras_stiffness.store.writer import RunWriter
        >>> info = RunInfo(class_names=["a", "b"], probe_labels=np.array([0, 1, 0, 1]),
        ...                probe_indices=np.arange(4), probe_is_val=np.zeros(4, bool),
        ...                probe_hash="abc", pair_sets=("train-train",), measures=("sign", "cos"),
        ...                layers=("dense",), spaces=("input", "dense"), bins=5,
        ...                metric="cosine", min_count=1, save_gram=False, config={"epochs": 2})
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "run.h5")
        >>> RunWriter.create(path, info).close()
        >>> with open_run(path) as run:
        ...     len(run), run.series("class_matrix").shape, run.config
        (0, (0, 1, 2, 2, 2), {'epochs': 2})
        >>> tmp.cleanup()
    """

    def __init__(self, path: PathLike) -> None:
        """Opens ``path``; prefer :func:`open_run`."""
        self.path = os.fspath(path)
        self._file, self._swmr = open_for_reading(self.path)
        try:
            self.format_version = check_format(self._file, self.path)
            self.info = load_info(self._file, self.path)
            self._datasets = {
                name: self._dataset(name) for name in series_names(self.info.save_gram, self.format_version)
            }
            self._n = self._count()
        except BaseException:
            self._file.close()
            raise

    def _dataset(self, name: str) -> h5py.Dataset:
        try:
            return self._file[name]
        except KeyError as exc:
            raise NotARunError(
                f"Received: {self.path!r} without the dataset {name!r}; expected every series of format "
                f"version {self.format_version}. The file is damaged or incomplete; re-create it."
            ) from exc
        except (OSError, RuntimeError) as exc:  # its object header fails HDF5's metadata checksum
            raise damaged_error(self.path, name, exc) from exc

    def _read(self, name: str, selection: Any) -> Any:
        """``dataset[selection]``; a failed read raises RunDamagedError (in SWMR mode after retries).

        ``gram`` reads as float64 whatever its storage type (HDF5 converts while reading).
        """
        ds = self._datasets[name]
        retries = _SWMR_RETRIES if self._swmr else 0
        for attempt in range(retries + 1):
            try:
                return ds.astype(np.float64)[selection] if name == "gram" else ds[selection]
            except (OSError, RuntimeError) as exc:
                if attempt == retries:
                    raise damaged_error(self.path, name, exc) from exc
            time.sleep(_RETRY_PAUSE * (attempt + 1))
            ds.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self) -> int:
        return min(ds.shape[0] for ds in self._datasets.values())

    def _open(self) -> h5py.File:
        if self._file is None:
            raise ValueError(
                f"Received: a closed Run for {self.path!r}; expected an open one. Call open_run(path) again."
            )
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
        try:
            return {name: attr_str(f, name) for name in f.attrs}
        except (OSError, RuntimeError) as exc:
            raise damaged_error(self.path, "", exc) from exc

    @property
    def tags(self) -> Dict[str, np.ndarray]:
        """``(T,)`` arrays by tag name: step (int64), epoch, train_loss, val_loss, ... (float64), then the
        cost tags (``seconds``; NaN in files of format version 1)."""
        return {name: self.series(name) for name in TAGS + COST_TAGS}

    def series(self, name: str) -> np.ndarray:
        """One per-row field stacked over the visible rows, e.g. ``"within"`` -> ``(T, P, M)``.

        Args:
            name: A tag (``"step"``...), a cost tag (``"seconds"``) or an array field of Measurement
                (``"class_matrix"``...). A series newer than the file's format version reads as its
                fill value (``seconds`` of a version 1 file: NaN).

        Raises:
            ValueError: unknown name, or ``"gram"`` in a run written without ``save_gram``.
            RunDamagedError: the rows fail their checksum.
        """
        self._open()
        readable = series_names(self.info.save_gram)
        if name not in readable or name == "measurement":
            known = [n for n in TAGS + COST_TAGS + ARRAY_FIELDS if n in readable]
            hint = " (this run was written with save_gram=False)" if name == "gram" else ""
            raise ValueError(f"Received: name={name!r}{hint}; expected one of {known}.")
        if name not in self._datasets:
            return missing_series(name, self.info, self._n)
        return self._read(name, slice(0, self._n))

    def measurement(self, i: int, *, gram: bool = True) -> Measurement:
        """Row ``i`` as a Measurement (negative ``i`` counts from the end).

        Args:
            i: Row number.
            gram: Read the row's ``(N, N)`` Gram matrix into ``Measurement.gram`` (float64; runs with
                ``save_gram`` only). Pass False when only the summaries are needed: the matrix takes
                ``N * N * 8`` bytes of memory (3.2 GB at N = 20,000).

        Raises:
            IndexError: ``i`` is out of range.
            RunDamagedError: the row fails its checksum in some dataset.
        """
        self._open()
        return row_measurement(self._read, self._row(i), self.info, self.format_version, gram=bool(gram))

    def _row(self, i: Any) -> int:
        n = self._n
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(
                f"Received: i={i!r}; expected an int with {-n} <= i < {n} (the run has {n} "
                "measurements; call refresh() to see newer ones)."
            )
        return int(i) % n

    def gram(self, i: int, rows: Optional[slice] = None, cols: Optional[slice] = None) -> np.ndarray:
        """The Gram matrix of row ``i``, or the block ``[rows, cols]`` of it, as float64.

        Only the tiles the block touches are read, so a block of a large matrix costs its own size.

        Args:
            i: Row number (negative counts from the end).
            rows: Probes of the block's rows, a slice (``slice(0, 100)``); None for all.
            cols: Probes of the block's columns, a slice; None for all.

        Returns:
            ``(len(rows), len(cols))`` float64, ``(N, N)`` by default.

        Raises:
            ValueError: the run was written without ``save_gram``.
            TypeError: ``rows`` or ``cols`` is not a slice (or None).
            IndexError: ``i`` is out of range.
            RunDamagedError: a tile fails its checksum.

        Example:
            >>> with open_run("run.h5") as run:  # doctest: +SKIP
            ...     run.gram(-1, rows=slice(0, 100), cols=slice(100, 200)).shape
            (100, 100)
        """
        self._open()
        if not self.info.save_gram:
            raise ValueError(
                "Received: gram() of a run written with save_gram=False; expected a run that stores the "
                "Gram matrix. Measure with save_gram=True to store it."
            )
        for name, value in (("rows", rows), ("cols", cols)):
            if value is not None and not isinstance(value, slice):
                raise TypeError(
                    f"Received: {name}={value!r}; expected a slice of probes such as slice(0, 100), or None for all."
                )
        rows, cols = (slice(None) if s is None else s for s in (rows, cols))
        return self._read("gram", (self._row(i), rows, cols))

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
