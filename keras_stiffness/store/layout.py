"""The HDF5 run format: names, shapes, RunInfo and the conversions between files and objects.

h5py, NumPy and the standard library only. :mod:`keras_stiffness.store.writer` builds the writer and the
reader on top of this module, and :mod:`keras_stiffness.store.checks` checks files and measurements
against it; ``saved_runs/README.md`` documents the format for people who read files without this
package.

A run file holds one growing row per :class:`~keras_stiffness.math.record.Measurement` along the
unlimited axis ``measurement``. Every other axis has a coordinate dataset that is an HDF5 dimension
scale (so xarray/h5netcdf see named dimensions). Axis letters are those of
:mod:`keras_stiffness.math.record`; their axis names in the file:

==========  ==============  ======================================================
letter      axis name       coordinate values
==========  ==============  ======================================================
(rows)      ``measurement`` row number 0..T-1 (int64, grows)
``P``       ``pair_set``    pair set names (str)
``M``       ``measure``     measure names (str)
``C``       ``class_from``  class names (str); first index of a directed class pair
``C``       ``class_to``    class names (str); second index
``L``       ``layer``       layer names (str)
``R``       ``space``       representation space names (str)
``B``       ``bin``         bin number 0..B-1 (int64)
``B+1``     ``bin_edge``    edge number 0..B (int64)
``N``       ``probe``       probe number 0..N-1 (int64)
``N``       ``probe_j``     probe number 0..N-1 (int64), second axis of ``gram``
==========  ==============  ======================================================

Format versions: 1 (the first), 2 (every numeric dataset chunked with HDF5's Fletcher32 checksum,
and the cost tag ``seconds``), 3 (the cost tags of a blockwise measurement: ``memory_budget``,
``block_size``, ``blocks``, ``block_pairs``, ``worker_pairs``, ``workers``). Files of versions 1 and 2
are still read: a series a version lacks (see
:attr:`Series.since`) reads as its fill value (NaN), and a damaged chunk goes unnoticed there.
Reading a chunk whose checksum fails raises :class:`RunDamagedError`.

The optional Gram matrix (``save_gram``): the series ``gram`` of shape ``(rows, N, N)`` is stored in
square tiles, one row at a time: chunks ``(1, c, c)`` with the tile edge ``c =`` :func:`gram_tile`
``(N)`` (at most :data:`GRAM_TILE` = 256, so a tile holds at most 512 KiB), each checksummed. A block of
one row is read without reading the rest of the row, and the writer fills a row block by block
(:meth:`~keras_stiffness.store.writer.RunWriter.begin_gram`). Its storage type is ``float64`` or
``float32``, chosen when the run is created (:attr:`RunInfo.gram_dtype`, the file attribute
``gram_dtype``; files without that attribute, written before it existed, hold float64). One row may
take at most :data:`GRAM_BYTES_LIMIT` (2 GiB) unless the run is created with ``large_gram=True``
(:func:`check_gram_size`). Files written before the tiles (chunks of whole rows) read the same way.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from dataclasses import field
from typing import Any, Callable, Dict, Optional, Tuple, Union

import h5py
import numpy as np

from keras_stiffness.math.record import COST_TAGS, TAGS, Measurement
from keras_stiffness.validation import check_int, check_names

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "keras_stiffness.run"
#: Version of the files this keras_stiffness writes; it reads every version from 1 up to this one.
FORMAT_VERSION = 3
#: Every dataset holding numbers is chunked with this HDF5 checksum filter (from format version 2).
CHECKSUM = "fletcher32"
METRICS = ("cosine", "euclidean")

#: Rows of one chunk hold about this many bytes (at least one row, at most ``MAX_CHUNK_ROWS``).
CHUNK_BYTES = 32 * 1024
MAX_CHUNK_ROWS = 512

#: Storage types of the saved Gram matrix (:attr:`RunInfo.gram_dtype`): exact, or half the size.
GRAM_DTYPES = ("float64", "float32")
#: Largest edge of the square tiles (HDF5 chunks) the Gram matrix is stored in (see :func:`gram_tile`):
#: 256, so a float64 tile (512 KiB) fits twice in HDF5's default chunk cache (1 MiB per dataset). A
#: block written across tiles then updates them in the cache; a tile larger than the cache would be
#: read and rewritten whole by every partial write (70 times slower for blocks of 64 probes).
GRAM_TILE = 256
#: Most bytes one measurement's Gram matrix may take in a run file (2 GiB: N = 16,384 probes in
#: float64, 23,170 in float32) unless the run is created with ``large_gram=True``. Every row of a run
#: with ``save_gram`` adds this much to the file, and reading one whole row needs N * N * 8 bytes of
#: memory (it is returned as float64); see :func:`check_gram_size`.
GRAM_BYTES_LIMIT = 2 * 2**30


class RunFileError(ValueError):
    """A run file, or something written to it, is not what this version of the format expects."""


class NotARunError(RunFileError):
    """The path is not a readable keras_stiffness run (not HDF5, another HDF5 file, truncated...)."""


class FormatVersionError(RunFileError):
    """The file was written in a format version this keras_stiffness cannot handle."""


class RunMismatchError(RunFileError):
    """A resumed run does not match the file (probe set, names or sizes differ)."""


class MeasurementMismatchError(RunFileError):
    """A Measurement does not fit the run it is appended to (names, shapes or types differ)."""


class RunInUseError(RunFileError):
    """The file is open in another process, so it cannot be modified now."""


class RunDamagedError(RunFileError):
    """Part of a run file cannot be read back intact (a Fletcher32 checksum fails, or HDF5 cannot read it).

    Attributes:
        path: The run file.
        dataset: Name of the dataset that cannot be read (``"within"``, ``"probe_label"``...), or
            ``""`` when the file's attributes cannot (HDF5 checksums those itself).
    """

    def __init__(self, message: str, path: str = "", dataset: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.dataset = dataset


def damaged_error(path: str, dataset: str, exc: BaseException) -> RunDamagedError:
    """The :class:`RunDamagedError` for a failed read of ``dataset`` (``""``: the file's attributes).

    Raise it ``from exc``.
    """
    reason = " ".join(str(exc).split()) or type(exc).__name__
    what = f"dataset {dataset!r}" if dataset else "file attributes"
    return RunDamagedError(
        f"Received: {path!r}, whose {what} cannot be read intact (HDF5: {reason}); expected data "
        "that matches its checksum. The file is damaged (its other datasets may still read): "
        "restore it from a backup copy, or re-create the run.",
        path=path,
        dataset=dataset,
    )


def read_dataset(ds: Any, name: str, selection: Any = ()) -> Any:
    """``ds[selection]``, a failed read (checksum mismatch, I/O error) raised as :class:`RunDamagedError`.

    ``ds`` is an ``h5py.Dataset`` or one of its wrappers (``ds.asstr()``); ``name`` names it in the
    message.
    """
    try:
        return ds[selection]
    except (OSError, RuntimeError) as exc:
        raise damaged_error(_filename(ds), name, exc) from exc


def _filename(ds: Any) -> str:
    try:
        return str(getattr(ds, "_dset", ds).file.filename)
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


@dataclasses.dataclass(eq=False)
class RunInfo:
    """Everything about a run that does not change from one measurement to the next.

    Sequences are normalized on construction (names to tuples of ``str``, probe arrays to int64/bool)
    and checked, so a bad value fails here rather than halfway through writing a file.

    Attributes:
        class_names: The ``C`` class names, in label order; empty (``C = 0``) for a probe set without
            classes (regression), whose class axes and class series then have length 0.
        probe_labels: ``(N,)`` int labels of the probes (-1 without classes).
        probe_indices: ``(N,)`` int index of each probe in its source split.
        probe_is_val: ``(N,)`` bool, True for held-out probes.
        probe_hash: Content hash of the probe set (checked when a run is resumed).
        pair_sets: The ``P`` pair set names.
        measures: The ``M`` measure names.
        layers: The ``L`` layer names (empty when no per-layer blocks are measured).
        spaces: The ``R`` representation space names (empty when distances are off).
        bins: ``B``, the number of distance bins.
        metric: Distance metric, ``"cosine"`` or ``"euclidean"``.
        min_count: Fewest pairs a distance bin needs to count.
        save_gram: Whether every row also stores the ``(N, N)`` Gram matrix.
        config: JSON-serializable run configuration.
        model_summary: Text summary of the model.
        loss: Name of the loss.
        rules: Layer name -> Gram rule used (``"dense"``, ``"conv"``, ``"fallback:jacobian"``...).
        versions: Library name -> version.
        gram_dtype: Storage type of the saved Gram matrix, ``"float64"`` (default, exact) or
            ``"float32"`` (half the file size, about 7 significant digits); it is read back as float64
            either way. Only used with ``save_gram``.

    Example:
        >>> import numpy as np
        >>> info = RunInfo(class_names=["a", "b"], probe_labels=np.array([0, 1, 0, 1]),
        ...                probe_indices=np.arange(4), probe_is_val=np.zeros(4, bool),
        ...                probe_hash="abc", pair_sets=("train-train",), measures=("sign", "cos"),
        ...                layers=("dense",), spaces=("input", "dense"), bins=5,
        ...                metric="cosine", min_count=1, save_gram=False, config={"epochs": 2})
        >>> info.n_probes, info.pair_sets
        (4, ('train-train',))
    """

    class_names: list
    probe_labels: np.ndarray
    probe_indices: np.ndarray
    probe_is_val: np.ndarray
    probe_hash: str
    pair_sets: Tuple[str, ...]
    measures: Tuple[str, ...]
    layers: Tuple[str, ...]
    spaces: Tuple[str, ...]
    bins: int
    metric: str
    min_count: int
    save_gram: bool
    config: dict
    model_summary: str = ""
    loss: str = ""
    rules: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    gram_dtype: str = "float64"

    def __post_init__(self) -> None:
        self.class_names = list(check_names(self.class_names, "class_names"))
        for name in ("pair_sets", "measures", "layers", "spaces"):
            setattr(self, name, check_names(getattr(self, name), name))
        self.probe_labels = _int_vector("probe_labels", self.probe_labels)
        self.probe_indices = _int_vector("probe_indices", self.probe_indices)
        is_val = np.asarray(self.probe_is_val)
        if is_val.ndim != 1 or is_val.dtype.kind not in "bi":
            raise TypeError(
                f"Received: probe_is_val with dtype {is_val.dtype} and shape {is_val.shape}; "
                "expected a 1-D bool array (True for held-out probes)."
            )
        self.probe_is_val = is_val.astype(bool)
        n = len(self.probe_labels)
        if not (len(self.probe_indices) == len(self.probe_is_val) == n) or n < 1:
            raise ValueError(
                f"Received: probe_labels, probe_indices, probe_is_val of lengths {n}, "
                f"{len(self.probe_indices)}, {len(self.probe_is_val)}; expected one common length "
                "N >= 1 (one entry per probe)."
            )
        for name in ("pair_sets", "measures"):  # layers, spaces, class_names (no classes) may be empty
            if not getattr(self, name):
                raise ValueError(f"Received: {name}=[] (empty); expected at least one name.")
        self.bins = check_int(self.bins, "bins")
        self.min_count = check_int(self.min_count, "min_count", minimum=0)
        if self.metric not in METRICS:
            raise ValueError(f"Received: metric={self.metric!r}; expected one of {list(METRICS)}.")
        if not isinstance(self.save_gram, (bool, np.bool_)):
            raise TypeError(f"Received: save_gram={self.save_gram!r}; expected True or False.")
        self.save_gram = bool(self.save_gram)
        self.gram_dtype = check_gram_dtype(self.gram_dtype)
        for name in ("probe_hash", "model_summary", "loss"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Received: {name} of type {type(getattr(self, name)).__name__}; expected str.")
        for name in ("config", "rules", "versions"):
            _to_json(name, getattr(self, name))

    @property
    def n_probes(self) -> int:
        """``N``, the number of probes."""
        return len(self.probe_labels)

    def axis_sizes(self) -> Dict[str, int]:
        """Length of every fixed axis of the file, by axis name."""
        c, n = len(self.class_names), self.n_probes
        return {
            "pair_set": len(self.pair_sets),
            "measure": len(self.measures),
            "class_from": c,
            "class_to": c,
            "layer": len(self.layers),
            "space": len(self.spaces),
            "bin": self.bins,
            "bin_edge": self.bins + 1,
            "probe": n,
            "probe_j": n,
        }


def check_gram_dtype(value: Any) -> str:
    """``value`` as the name of a Gram storage type in :data:`GRAM_DTYPES` (``"float64"`` or ``"float32"``).

    Accepts the names and the NumPy types (``np.float32``, ``np.dtype("float32")``).

    Raises:
        TypeError, ValueError: anything else.

    Example:
        >>> check_gram_dtype(np.float32)
        'float32'
    """
    expected = (
        "expected 'float64' (the default, exact) or 'float32' (half the size, about 7 significant digits), "
        "the type the saved Gram matrix is stored in. Pass gram_dtype='float64' or gram_dtype='float32'."
    )
    if not isinstance(value, (str, np.dtype)) and not (isinstance(value, type) and issubclass(value, np.generic)):
        raise TypeError(f"Received: gram_dtype={value!r} of type {type(value).__name__}; {expected}")
    try:
        name = np.dtype(value).name
    except TypeError:
        name = None
    if name not in GRAM_DTYPES:
        raise ValueError(f"Received: gram_dtype={value!r}; {expected}")
    return name


def gram_bytes(n: int, dtype: Any = "float64") -> int:
    """Bytes one row of ``gram`` takes in a run file: ``n * n`` values of ``dtype`` (checksums aside).

    Example:
        >>> gram_bytes(20_000, "float32") / 2**30  # GiB
        1.4901161193847656
    """
    n = check_int(n, "n")
    return n * n * np.dtype(check_gram_dtype(dtype)).itemsize


def gram_max_probes(dtype: Any = "float64", limit: int = GRAM_BYTES_LIMIT) -> int:
    """The most probes whose Gram matrix, stored as ``dtype``, fits in ``limit`` bytes.

    Example:
        >>> gram_max_probes("float64"), gram_max_probes("float32")
        (16384, 23170)
    """
    return math.isqrt(limit // np.dtype(check_gram_dtype(dtype)).itemsize)


def check_gram_size(n: int, dtype: Any = "float64", *, large_gram: bool = False) -> int:
    """Check that a saved Gram matrix of ``n`` probes is within :data:`GRAM_BYTES_LIMIT`; return its bytes.

    The limit is per measurement: one row of ``gram``, the ``(N, N)`` matrix of one measurement, may
    take at most 2 GiB in the run file (N = 16,384 probes stored as float64, 23,170 as float32). Every
    measurement adds that much to the file. Call it when a run with ``save_gram`` is created (the
    writer does, in :meth:`~keras_stiffness.store.writer.RunWriter.create`); ``large_gram=True``
    allows any size.

    Args:
        n: ``N``, the number of probes.
        dtype: The storage type, ``"float64"`` or ``"float32"`` (:attr:`RunInfo.gram_dtype`).
        large_gram: Allow a Gram matrix over the limit.

    Returns:
        The bytes of one row (:func:`gram_bytes`).

    Raises:
        ValueError: over the limit without ``large_gram=True`` (the message says the size and the fixes).
        TypeError: ``large_gram`` is not a bool, or a bad ``n`` / ``dtype``.

    Example:
        >>> check_gram_size(1000)
        8000000
        >>> check_gram_size(20_000, large_gram=True) / 2**30
        2.9802322387695312
    """
    if not isinstance(large_gram, (bool, np.bool_)):
        raise TypeError(f"Received: large_gram={large_gram!r}; expected True or False.")
    size = gram_bytes(n, dtype)
    dtype = check_gram_dtype(dtype)
    if size > GRAM_BYTES_LIMIT and not large_gram:
        other = (
            ""
            if dtype == "float32"
            else (f", or gram_dtype='float32' (half the size; up to {gram_max_probes('float32'):,} probes)")
        )
        raise ValueError(
            f"Received: save_gram with N={n:,} probes and gram_dtype={dtype!r}, whose Gram matrix takes "
            f"{size / 2**30:.2f} GiB ({size:,} bytes) per measurement in the run file; expected at most "
            f"GRAM_BYTES_LIMIT = {GRAM_BYTES_LIMIT / 2**30:g} GiB per measurement (up to "
            f"{gram_max_probes(dtype):,} probes in {dtype}). Pass large_gram=True to store it anyway "
            f"(every measurement adds {size / 2**30:.2f} GiB to the file){other}, or use fewer probes, or "
            "save_gram=False (every figure and summary is computed without the saved matrix)."
        )
    return size


def gram_tile(n: int) -> int:
    """Edge ``c`` of the square tiles (HDF5 chunks ``(1, c, c)``) that store an ``(N, N)`` Gram matrix.

    The matrix is cut into ``t = ceil(N / GRAM_TILE)`` tiles per side of equal edge
    ``c = ceil(N / t) <= GRAM_TILE`` (256), so a tile holds at most 512 KiB of float64 and the tiles at
    the edges overhang the matrix by less than ``t`` entries.

    Example:
        >>> gram_tile(8), gram_tile(256), gram_tile(300), gram_tile(20_000)
        (8, 256, 150, 254)
    """
    n = check_int(n, "n")
    tiles = -(-n // GRAM_TILE)
    return -(-n // tiles)


def _int_vector(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise TypeError(
            f"Received: {name} with dtype {array.dtype} and shape {array.shape}; expected a 1-D integer array."
        )
    return array.astype(np.int64)


def _to_json(name: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"Received: {name} that JSON cannot encode ({e}); expected a JSON-serializable value "
            "(dicts, lists, str, numbers, bools, None); convert other objects with str() first."
        ) from e


@dataclasses.dataclass(frozen=True)
class Series:
    """One growing dataset: its axes after ``measurement``, element kind and meaning."""

    name: str
    axes: Tuple[str, ...]
    kind: str  # "f": float64 (fill NaN), "i": int64
    description: str
    #: First format version with this dataset; reading an older file gives its fill value instead.
    since: int = 1

    @property
    def fill(self) -> Any:
        """The fill value: NaN for floats, 0 for counts (also what an older file without it reads as)."""
        return np.nan if self.kind == "f" else 0


#: Every growing dataset in file order (``step`` last: its length commits a row).
SERIES: Tuple[Series, ...] = (
    Series("epoch", (), "f", "Epochs completed when measured (fractional for step schedules)"),
    Series("train_loss", (), "f", "Training loss when measured (NaN when unknown)"),
    Series("val_loss", (), "f", "Validation loss when measured (NaN when unknown)"),
    Series("learning_rate", (), "f", "Optimizer learning rate when measured (NaN when unknown)"),
    Series("wall_time", (), "f", "Seconds since the run started"),
    Series("probe_loss", (), "f", "Mean loss of the training probes when measured (inference mode)"),
    Series("probe_val_loss", (), "f", "Mean loss of the held-out probes when measured (NaN without)"),
    # Cost tags (math.record.COST_TAGS): floats, NaN when unknown.
    Series(
        "seconds",
        (),
        "f",
        "Wall seconds the measurement took up to just before its row was written (NaN when unknown)",
        since=2,
    ),
    Series("memory_budget", (), "f", "Bytes the measurement was allowed for its Gram blocks and summaries", since=3),
    Series("block_size", (), "f", "Probes per Gram block", since=3),
    Series("blocks", (), "f", "Blocks of probes the Gram matrix was cut into", since=3),
    Series("block_pairs", (), "f", "Gram block pairs I <= J of the whole matrix", since=3),
    Series("worker_pairs", (), "f", "Block pairs the writing process formed (all of them on one worker)", since=3),
    Series("workers", (), "f", "Processes that shared the measurement", since=3),
    Series(
        "class_matrix",
        ("pair_set", "measure", "class_from", "class_to"),
        "f",
        "Mean stiffness per directed class pair (step on class_from, effect on class_to); NaN without pairs",
    ),
    Series(
        "class_pairs", ("pair_set", "class_from", "class_to"), "i", "Number of pairs behind each class_matrix entry"
    ),
    Series("within", ("pair_set", "measure"), "f", "Mean of the class_matrix diagonal"),
    Series("between", ("pair_set", "measure"), "f", "Mean of the off-diagonal class_matrix entries"),
    Series("mean", ("pair_set", "measure"), "f", "Mean stiffness over all pairs of the pair set"),
    Series("pairs", ("pair_set",), "i", "Number of pairs in each pair set"),
    Series("layer_mean", ("layer", "pair_set", "measure"), "f", "Like mean, from that layer's Gram block alone"),
    Series("layer_within", ("layer", "pair_set", "measure"), "f", "Like within, from that layer's Gram block alone"),
    Series("layer_between", ("layer", "pair_set", "measure"), "f", "Like between, from that layer's Gram block alone"),
    Series("distance_edges", ("space", "bin_edge"), "f", "Bin edges of the distance curves"),
    Series(
        "curve_mean",
        ("space", "measure", "bin"),
        "f",
        "Mean stiffness of train-train pairs per distance bin (NaN if empty)",
    ),
    Series("curve_count", ("space", "bin"), "i", "Train-train pairs per distance bin"),
    Series("critical_length", ("space", "measure"), "f", "First zero crossing of the binned curve (NaN when none)"),
    Series(
        "critical_length_fit",
        ("space", "measure"),
        "f",
        "Zero of a line fitted to within-class stiffness vs distance (NaN when none)",
    ),
    Series("zero_grad", (), "i", "Probes whose gradient has zero norm"),
    Series(
        "gram",
        ("probe", "probe_j"),
        "f",
        "Gram matrix of the probes' loss gradients, total over layers (only with save_gram; stored as "
        "the file attribute gram_dtype says, in square tiles)",
    ),
    Series("measurement", (), "i", "Row number (coordinate of the measurement axis)"),
    Series("step", (), "i", "Optimizer steps taken when measured (0 = at initialization)"),
)
SERIES_BY_NAME: Dict[str, Series] = {s.name: s for s in SERIES}
#: Per-row Measurement fields that are arrays or per-row scalars (everything but the names and tags).
ARRAY_FIELDS = tuple(s.name for s in SERIES if s.name not in TAGS + COST_TAGS and s.name != "measurement")
STRING_AXES = ("pair_set", "measure", "class_from", "class_to", "layer", "space")
INDEX_AXES = ("bin", "bin_edge", "probe", "probe_j")


def series_names(save_gram: bool, version: int = FORMAT_VERSION) -> Tuple[str, ...]:
    """Names of the growing datasets a file of format ``version`` has (``gram`` only with ``save_gram``)."""
    return tuple(s.name for s in SERIES if (save_gram or s.name != "gram") and s.since <= version)


def chunk_rows(row_elements: int) -> int:
    """Rows per chunk for a dataset whose rows hold ``row_elements`` 8-byte numbers."""
    return int(min(MAX_CHUNK_ROWS, max(1, CHUNK_BYTES // max(8 * row_elements, 1))))


def write_layout(f: h5py.File, info: RunInfo, library_version: str) -> None:
    """Write attributes, coordinates, probe datasets and empty growing series into a new file."""
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = np.int64(FORMAT_VERSION)
    f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    f.attrs["library_version"] = library_version
    f.attrs["config"] = _to_json("config", info.config)
    f.attrs["model_summary"] = info.model_summary
    f.attrs["loss"] = info.loss
    f.attrs["rules"] = _to_json("rules", info.rules)
    f.attrs["versions"] = _to_json("versions", info.versions)
    f.attrs["metric"] = info.metric
    f.attrs["min_count"] = np.int64(info.min_count)
    f.attrs["probe_hash"] = info.probe_hash
    f.attrs["save_gram"] = np.bool_(info.save_gram)
    f.attrs["gram_dtype"] = info.gram_dtype
    f.attrs["resumed"] = "[]"

    sizes = info.axis_sizes()
    strings = {
        "pair_set": info.pair_sets,
        "measure": info.measures,
        "class_from": info.class_names,
        "class_to": info.class_names,
        "layer": info.layers,
        "space": info.spaces,
    }
    scales = {}
    for axis, values in strings.items():
        scales[axis] = f.create_dataset(axis, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
    # Numbers are checksummed (Fletcher32 needs chunks; every axis here has length >= 1). The strings
    # above are not: their values live in HDF5's global heap, outside any chunk.
    for axis in INDEX_AXES:
        if axis != "probe_j" or info.save_gram:
            scales[axis] = f.create_dataset(axis, data=np.arange(sizes[axis], dtype=np.int64), fletcher32=True)
    for name, values in (
        ("probe_label", info.probe_labels),
        ("probe_index", info.probe_indices),
        ("probe_is_val", info.probe_is_val),
    ):
        f.create_dataset(name, data=values, fletcher32=True)

    datasets = {}
    for s in SERIES:
        if s.name == "gram" and not info.save_gram:
            continue
        shape = tuple(sizes[a] for a in s.axes)
        # A chunk needs a positive length on every axis, so an empty axis (no layers, or no
        # distance spaces) is made resizable; it never grows.
        chunk = tuple(max(d, 1) for d in shape)
        rows = chunk_rows(int(np.prod(chunk, dtype=np.int64)))
        dtype = np.float64 if s.kind == "f" else np.int64
        if s.name == "gram":  # square tiles, one row at a time (see gram_tile)
            rows, chunk, dtype = 1, (gram_tile(info.n_probes),) * 2, np.dtype(info.gram_dtype)
        datasets[s.name] = f.create_dataset(
            s.name,
            shape=(0,) + shape,
            maxshape=(None,) + tuple(d or None for d in shape),
            chunks=(rows,) + chunk,
            dtype=dtype,
            fillvalue=s.fill,
            fletcher32=True,
        )
        datasets[s.name].attrs["description"] = s.description
    scales["measurement"] = datasets["measurement"]
    for axis, ds in scales.items():
        ds.make_scale(axis)
    for name, ds in datasets.items():
        for i, axis in enumerate(("measurement",) + SERIES_BY_NAME[name].axes):
            if name != "measurement" or i:
                ds.dims[i].attach_scale(scales[axis])
    for name in ("probe_label", "probe_index", "probe_is_val"):
        f[name].dims[0].attach_scale(scales["probe"])
    f["probe_label"].attrs["description"] = "Label of each probe (index into class_from/class_to)"
    f["probe_index"].attrs["description"] = "Index of each probe in its source split"
    f["probe_is_val"].attrs["description"] = "True for held-out (validation) probes"


def attr_str(f: h5py.File, name: str) -> str:
    """A string attribute as ``str`` (h5py gives bytes for fixed-length strings)."""
    value = f.attrs[name]
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def read_info(f: h5py.File) -> RunInfo:
    """Rebuild the :class:`RunInfo` of an open run file (format already checked).

    Raises:
        RunDamagedError: a dataset fails its checksum.
        KeyError, ValueError, TypeError: missing or invalid content.
    """

    def strings(name: str) -> Tuple[str, ...]:
        return tuple(read_dataset(f[name].asstr(), name).tolist())

    def numbers(name: str) -> np.ndarray:
        return read_dataset(f[name], name)

    return RunInfo(
        class_names=list(strings("class_from")),
        probe_labels=numbers("probe_label"),
        probe_indices=numbers("probe_index"),
        probe_is_val=numbers("probe_is_val"),
        probe_hash=attr_str(f, "probe_hash"),
        pair_sets=strings("pair_set"),
        measures=strings("measure"),
        layers=strings("layer"),
        spaces=strings("space"),
        bins=int(f["bin"].shape[0]),
        metric=attr_str(f, "metric"),
        min_count=int(f.attrs["min_count"]),
        save_gram=bool(f.attrs["save_gram"]),
        config=json.loads(attr_str(f, "config")),
        model_summary=attr_str(f, "model_summary"),
        loss=attr_str(f, "loss"),
        rules=json.loads(attr_str(f, "rules")),
        versions=json.loads(attr_str(f, "versions")),
        # Files written before the attribute existed store the Gram matrix as float64.
        gram_dtype=attr_str(f, "gram_dtype") if "gram_dtype" in f.attrs else "float64",
    )


def missing_series(name: str, info: RunInfo, rows: Optional[int] = None) -> np.ndarray:
    """What series ``name`` reads as in a file older than it (:attr:`Series.since`): its fill value.

    ``rows=None`` gives one row (the shape of the axes after ``measurement``), else ``(rows, ...)``.
    """
    s = SERIES_BY_NAME[name]
    sizes = info.axis_sizes()
    shape = tuple(sizes[a] for a in s.axes)
    return np.full(shape if rows is None else (rows,) + shape, s.fill, dtype=np.float64 if s.kind == "f" else np.int64)


def row_measurement(
    read: Callable[[str, int], Any], i: int, info: RunInfo, version: int = FORMAT_VERSION, gram: bool = True
) -> Measurement:
    """Read row ``i`` (non-negative, already bounds-checked) back into a Measurement.

    ``read(name, i)`` reads row ``i`` of series ``name``; series a file of format ``version`` lacks
    read as their fill value (:func:`missing_series`). ``gram=False`` leaves ``Measurement.gram``
    None (the Gram matrix is not read).
    """
    present = series_names(info.save_gram, version)
    values: Dict[str, Any] = {
        name: read(name, i) if name in present else missing_series(name, info)[()]
        for name in series_names(info.save_gram and gram)
    }
    values.pop("measurement")
    for name in ("step", "zero_grad"):
        values[name] = int(values[name])
    for name in TAGS[1:] + COST_TAGS:
        values[name] = float(values[name])
    gram: Optional[np.ndarray] = values.pop("gram", None)
    return Measurement(
        pair_sets=info.pair_sets,
        measures=info.measures,
        layers=info.layers,
        spaces=info.spaces,
        gram=gram,
        **values,
    )
