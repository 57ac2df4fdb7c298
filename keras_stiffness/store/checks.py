"""Checks of run files and of what goes into them.

h5py, NumPy and the standard library only. Is a file a run of this format (:func:`check_format`),
can a run described by a :class:`~keras_stiffness.store.layout.RunInfo` append to it
(:func:`check_resumable`, :func:`info_differences`), does a Measurement fit a run
(:func:`row_arrays`). The layout they check against is in :mod:`keras_stiffness.store.layout`.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import h5py
import numpy as np

from keras_stiffness.math.record import Measurement
from keras_stiffness.store.layout import (
    FORMAT,
    FORMAT_VERSION,
    SERIES,
    FormatVersionError,
    MeasurementMismatchError,
    NotARunError,
    RunDamagedError,
    RunInfo,
    RunMismatchError,
    Series,
    attr_str,
    damaged_error,
    read_info,
)


def check_format(f: h5py.File, path: str) -> int:
    """Check the ``format`` attribute and the version; return the file's format version."""
    try:
        fmt = attr_str(f, "format") if "format" in f.attrs else None
    except (OSError, RuntimeError) as exc:  # HDF5 found the attributes' metadata checksum wrong
        raise damaged_error(path, "", exc) from exc
    if fmt != FORMAT:
        top = sorted(f.keys())[:5]
        raise NotARunError(
            f"Received: {path!r}, an HDF5 file with format attribute {fmt!r} and top-level items "
            f"{top}; expected a keras_stiffness run (format={FORMAT!r}). Pass the .h5 file written "
            "by RunWriter / StiffnessCallback, not a model or other HDF5 file."
        )
    try:
        version = int(f.attrs["format_version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise NotARunError(
            f"Received: {path!r} without a readable integer format_version attribute; expected a "
            "keras_stiffness run file. The file is damaged; re-create it."
        ) from exc
    except (OSError, RuntimeError) as exc:
        raise damaged_error(path, "", exc) from exc
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"Received: {path!r} with format_version={version}; expected <= {FORMAT_VERSION}: it "
            "was written by a newer keras_stiffness; upgrade (pip install -U keras_stiffness)."
        )
    if version < 1:
        raise NotARunError(f"Received: {path!r} with format_version={version}; expected >= 1.")
    return version


def check_info(info: RunInfo) -> None:
    if not isinstance(info, RunInfo):
        raise TypeError(f"Received: info of type {type(info).__name__}; expected a RunInfo.")


def load_info(f: h5py.File, path: str) -> RunInfo:
    """The stored RunInfo; RunDamagedError for a checksum failure, NotARunError for anything missing."""
    try:
        return read_info(f)
    except RunDamagedError:
        raise
    except RuntimeError as e:  # h5py's error for a metadata checksum failure (of an attribute...)
        raise damaged_error(path, "", e) from e
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise NotARunError(
            f"Received: {path!r}, marked as a run of format {FORMAT!r} but with missing or invalid "
            f"content ({type(e).__name__}: {e}); expected a complete run file. It is damaged."
        ) from e


def check_resumable(f: h5py.File, path: str, info: RunInfo) -> Tuple[RunInfo, int]:
    """The stored RunInfo of ``f`` and its format version, checked to be appendable by ``info``.

    A file of an older format version passes (the writer upgrades it by rewriting it); a newer one
    raises :class:`FormatVersionError` (from :func:`check_format`).
    """
    version = check_format(f, path)
    stored = load_info(f, path)
    diffs = info_differences(stored, info)
    if diffs:
        details = "; ".join(f"{k}: file has {a!r}, received {b!r}" for k, (a, b) in diffs.items())
        raise RunMismatchError(
            f"Received: a RunInfo that differs from {path!r} ({details}); expected the same "
            "probe set and configuration as the stored run. Use the original probe set, or "
            "start a new run with RunWriter.create(..., overwrite=True)."
        )
    return stored, version


#: RunInfo fields a resumed run must share with its file (they fix the datasets' shapes and meaning).
RESUME_FIELDS = (
    "probe_hash",
    "class_names",
    "pair_sets",
    "measures",
    "layers",
    "spaces",
    "bins",
    "metric",
    "min_count",
    "save_gram",
    "gram_dtype",
    "n_probes",
)


def info_differences(stored: RunInfo, new: RunInfo) -> Dict[str, Tuple[Any, Any]]:
    """Fields of :data:`RESUME_FIELDS` whose values differ: name -> (in file, received).

    ``gram_dtype`` only counts when both store the Gram matrix (``save_gram``).
    """
    out = {}
    for name in RESUME_FIELDS:
        if name == "gram_dtype" and not (stored.save_gram and new.save_gram):
            continue
        a, b = getattr(stored, name), getattr(new, name)
        if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            out[name] = (a, b)
    return out


def row_arrays(m: Measurement, info: RunInfo, *, gram_written: bool = False) -> Dict[str, np.ndarray]:
    """Check ``m`` against ``info`` and turn it into one row per series (nothing written).

    With ``save_gram``, the row's Gram matrix comes from ``m.gram``, or, with ``gram_written=True``,
    was written blockwise beforehand (then ``m.gram`` must be None and the row has no ``gram``).

    Raises:
        TypeError: ``m`` is not a Measurement.
        MeasurementMismatchError: names, shapes or value types do not fit the run.
    """
    if not isinstance(m, Measurement):
        raise TypeError(f"Received: {type(m).__name__}; expected a keras_stiffness Measurement.")
    for name in ("pair_sets", "measures", "layers", "spaces"):
        got = tuple(getattr(m, name))
        if got != getattr(info, name):
            raise MeasurementMismatchError(
                f"Received: Measurement with {name}={got}; expected {getattr(info, name)} as in the "
                "run's RunInfo. Measure with the same probe set and configuration as the run."
            )
    sizes = info.axis_sizes()
    row: Dict[str, np.ndarray] = {}
    for s in SERIES:
        if s.name == "measurement" or (s.name == "gram" and not info.save_gram):
            continue
        value = getattr(m, s.name)
        if s.name == "gram" and gram_written:
            if value is not None:
                raise MeasurementMismatchError(
                    f"Received: Measurement with gram of shape {np.shape(value)} while a Gram row written "
                    "blockwise (RunWriter.begin_gram) is waiting for this append; expected one of the two. "
                    "Append a Measurement with gram=None to commit the blockwise row, or discard that row "
                    "first (GramRow.discard()) to append the whole matrix."
                )
            continue
        if value is None:
            shape = tuple(sizes[a] for a in s.axes)
            raise MeasurementMismatchError(
                f"Received: Measurement with {s.name}=None; expected "
                + (f"an array of shape {shape}" if shape else "a number (NaN when unknown)")
                + (
                    " because the run was created with save_gram=True (or write the matrix blockwise "
                    "first: RunWriter.begin_gram())."
                    if s.name == "gram"
                    else "."
                )
            )
        row[s.name] = _cell(s, value, tuple(sizes[a] for a in s.axes))
    return row


def _cell(s: Series, value: Any, shape: Tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        letters = ", ".join(s.axes)
        raise MeasurementMismatchError(
            f"Received: {s.name} with shape {array.shape}; expected {shape} = ({letters}) for this "
            "run. Measure with the same probe set and configuration as the run."
        )
    if array.dtype.kind not in "biuf":
        raise MeasurementMismatchError(
            f"Received: {s.name} with dtype {array.dtype}; expected numbers (NaN for an unknown value, not None)."
        )
    if s.kind == "f":
        return array.astype(np.float64)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise MeasurementMismatchError(f"Received: {s.name} with non-integer values; expected counts (whole numbers).")
    return array.astype(np.int64)
