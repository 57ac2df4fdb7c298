"""Reading a run file: :func:`open_run` gives a :class:`Run`, also while a writer is appending to it.

A file that is being written (or whose writer died) is opened in SWMR read mode, a closed one
normally; :meth:`Run.refresh` picks up rows appended since. h5py and NumPy only.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterator, Tuple

import h5py
import numpy as np

from keras_stiffness.math.record import TAGS, Measurement
from keras_stiffness.store.checks import check_format, load_info
from keras_stiffness.store.files import open_for_reading
from keras_stiffness.store.layout import ARRAY_FIELDS, PathLike, attr_str, row_measurement, series_names

__all__ = ["Run", "open_run"]


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
            self._datasets = {name: self._file[name] for name in series_names(self.info.save_gram)}
            self._n = self._count()
        except BaseException:
            self._file.close()
            raise

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
