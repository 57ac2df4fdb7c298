"""Load classification data as standardized NumPy arrays: the embedded digits, TFDS, or an ``.npz``.

NumPy only at import: scikit-learn (digits) and TensorFlow Datasets (``tfds:``) are imported inside
the functions that need them, so ``import keras_stiffness.data.sources`` never imports TensorFlow. The TFDS
reader lives in :mod:`keras_stiffness.data.tfds`, imported only for ``tfds:`` sources.

Four kinds of source, one result (:class:`DataSplits`):

- ``"digits"``: scikit-learn's bundled 8x8 digits (1,797 images, no download), as ``(N, 8, 8, 1)``.
- ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``: the paper's datasets as named presets
  (:data:`PRESETS`) with fixed preprocessing, read through TensorFlow Datasets from the data directory
  (never downloaded): the ``train`` split for training and the ``test`` split as held-out data; pixels
  scaled to ``[0, 1]`` (float32), then standardized like every source; grayscale as ``(N, 28, 28, 1)``,
  CIFAR as ``(N, 32, 32, 3)``; labels ``0..C-1`` named by the dataset's ClassLabel.
- ``"tfds:NAME[:SPLIT]"``: a TensorFlow Datasets image classification set (``mnist``,
  ``fashion_mnist``, ``cifar10``, ``cifar100``, ...) that is already prepared on disk. Nothing is ever
  downloaded; missing data raises :class:`~keras_stiffness.data.tfds.DataNotFoundError` saying how to get it.
- ``"path/to/file.npz"``: arrays ``x``, ``y`` and optionally ``x_val``, ``y_val``, ``class_names``; for
  a model with several inputs, one array ``x_NAME`` per input instead of ``x`` (and ``x_val_NAME``
  for held-out data), loaded as ``x = {NAME: array}`` (see :func:`_load_npz`).

Inputs are standardized per channel (the last axis) with statistics of the training split only, as in
the paper ("inputs standardized"). Labels are int64 in ``0..C-1``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from typing import Optional

import numpy as np

from keras_stiffness import nested
from keras_stiffness.validation import (
    CHUNK_VALUES,
    check_finite,
    check_fraction,
    check_optional_int,
    check_seed,
    check_targets,
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """One of the paper's datasets as a named source with fixed preprocessing (see :data:`PRESETS`).

    Attributes:
        name: The source name (``--data NAME``).
        tfds_name: The TensorFlow Datasets builder it is read from.
        image_shape: Shape of one image, channels last.
        n_classes: Number of classes (labels ``0..n_classes-1``).
        description: One line for help texts.
    """

    name: str
    tfds_name: str
    image_shape: tuple
    n_classes: int
    description: str


#: The paper's datasets (Fort et al. 2019) as named sources. Each is read with TensorFlow Datasets from
#: the data directory (``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``), never
#: downloaded. Fixed preprocessing, the same for all four: the ``train`` split is the training data and
#: the ``test`` split (10,000 images in each of the four) the held-out data; only a prepared copy
#: without a ``test`` split would have ``val_fraction`` of the training data carved out instead. Pixels
#: (uint8) are scaled to ``[0, 1]`` as float32, then standardized per channel with the training
#: split's statistics (:func:`standardize`, as for every source; the scaling does not change the
#: standardized values beyond float32 rounding). Labels are the ``label`` ClassLabel (for CIFAR-100 the
#: 100 fine classes, not the 20 super-classes), with its class names. ``"tfds:NAME[:SPLIT]"`` stays
#: the generic form (any split; pixels standardized without the scaling step).
PRESETS = {
    p.name: p
    for p in (
        Preset("mnist", "mnist", (28, 28, 1), 10, "MNIST handwritten digits, 28x28x1, 60,000 train / 10,000 test"),
        Preset(
            "fashion_mnist",
            "fashion_mnist",
            (28, 28, 1),
            10,
            "Fashion-MNIST clothing, 28x28x1, 60,000 train / 10,000 test",
        ),
        Preset("cifar10", "cifar10", (32, 32, 3), 10, "CIFAR-10, 32x32x3, 50,000 train / 10,000 test"),
        Preset("cifar100", "cifar100", (32, 32, 3), 100, "CIFAR-100 (100 fine classes), 32x32x3, 50,000 / 10,000"),
    )
}

_FORMS = (
    "'digits', 'tfds:NAME[:SPLIT]' (e.g. 'tfds:cifar10:train[:10%]'), a preset ('mnist', 'fashion_mnist', "
    "'cifar10', 'cifar100') or a path ending in '.npz'"
)


@dataclasses.dataclass
class DataSplits:
    """A classification dataset as standardized arrays, with an optional held-out split.

    Attributes:
        name: The source it came from, e.g. ``"digits"``, ``"cifar10"``, ``"tfds:mnist"``,
            ``"path/to/file.npz"``.
        x_train: float32 inputs, standardized per channel with training statistics; image sets are
            ``(N, H, W, C)``. An ``.npz`` with several inputs gives ``{NAME: (N, ...)}`` (each input
            standardized on its own).
        y_train: int64 labels in ``0..n_classes-1``.
        x_val: Held-out inputs standardized with the *training* statistics, or None.
        y_val: Held-out labels, or None.
        class_names: One name per class.
        input_shape: ``x_train.shape[1:]`` (several inputs: ``{NAME: shape}``).
        n_classes: Number of classes (``len(class_names)``; 0 for regression targets).
        targets_train: What the loss is given when it is not the class ids ``y_train``, else None:
            the ``.npz``'s one-hot or soft rows ``(N, C)`` as stored (float32; ``y_train`` is then
            their argmax), or, with ``target_kind="regression"``, the float32 regression targets
            ``(N, ...)`` unchanged (``y_train`` is then all -1, no classes).
        targets_val: The same for the held-out part, or None.
        target_kind: ``"classes"`` (default) or ``"regression"`` (no classes: ``class_names`` empty,
            ``n_classes`` 0).

    Design note: the class ids stay in ``y_train``/``y_val`` for every source, so everything that
    groups by class (stratified carving, ``kstiff train``) is unchanged; the targets as given ride
    along in the optional ``targets_*`` fields, sliced with the same rows, and
    :meth:`~keras_stiffness.data.probes.ProbeSet.from_splits` hands them to the loss.

    Example:
        >>> data = load_data("digits", seed=0)
        >>> data.x_train.shape, data.x_val.shape, data.n_classes
        ((1438, 8, 8, 1), (359, 8, 8, 1), 10)
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: Optional[np.ndarray]
    y_val: Optional[np.ndarray]
    class_names: list[str]
    input_shape: tuple
    n_classes: int
    targets_train: Optional[np.ndarray] = None
    targets_val: Optional[np.ndarray] = None
    target_kind: str = "classes"


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def parse_source(source: str) -> tuple[str, str, Optional[str]]:
    """Validate a data source string and split it into its parts.

    Args:
        source: ``"digits"``, a preset name (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``,
            ``"cifar100"``; see :data:`PRESETS`), ``"tfds:NAME[:SPLIT]"`` or a path ending in ``.npz``.
            For TFDS, NAME may carry a config (``"cifar10_corrupted/brightness_1"``) and SPLIT may use
            TFDS slicing (``"train[:10%]"``); everything after the first colon following NAME is the
            split. Presets take no split.

    Returns:
        ``(kind, name, split)``: ``("digits", "digits", None)``, ``("preset", NAME, None)``,
        ``("tfds", NAME, SPLIT or "train")`` or ``("npz", path, None)``.

    Raises:
        TypeError: ``source`` is not a string.
        ValueError: ``source`` matches none of the forms; a bare TFDS name gets a ``tfds:`` suggestion.

    Example:
        >>> parse_source("tfds:mnist")
        ('tfds', 'mnist', 'train')
        >>> parse_source("tfds:cifar10:train[:10%]")
        ('tfds', 'cifar10', 'train[:10%]')
        >>> parse_source("cifar10")
        ('preset', 'cifar10', None)
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"Received: source={source!r} of type {type(source).__name__}; expected a string, one of {_FORMS}."
        )
    source = os.fspath(source).strip()
    if source == "digits":
        return "digits", "digits", None
    if source in PRESETS:
        return "preset", source, None
    preset, sep, split = source.partition(":")
    if sep and preset in PRESETS:
        raise ValueError(
            f"Received: source={source!r}; expected the preset {preset!r} without a split (it always "
            f"trains on 'train' and holds out 'test'). For another split write 'tfds:{preset}:{split}'."
        )
    if source.startswith("tfds:"):
        rest = source[len("tfds:") :]
        name, sep, split = rest.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_]+(/[A-Za-z0-9_.\-]+)?", name):
            raise ValueError(
                f"Received: source={source!r} with dataset name {name!r}; expected "
                "'tfds:NAME[:SPLIT]' with NAME a TFDS builder name (optionally 'NAME/CONFIG'), e.g. "
                "'tfds:mnist' or 'tfds:cifar10:train[:10%]'. Fix the name after 'tfds:'."
            )
        if sep and not split:
            raise ValueError(
                f"Received: source={source!r} with an empty split after the colon; expected "
                "'tfds:NAME' or 'tfds:NAME:SPLIT' (e.g. 'tfds:mnist:train'). Drop the trailing colon "
                "or name a split."
            )
        return "tfds", name, split or "train"
    if source.lower().endswith(".npz"):
        return "npz", source, None
    hint = ""
    if re.fullmatch(r"[A-Za-z0-9_]+(/[A-Za-z0-9_.\-]+)?", source):
        hint = f" For the TensorFlow Datasets set write 'tfds:{source}'."
    elif os.path.isfile(source):
        hint = " Files must be NumPy archives ending in '.npz' (arrays x, y; see load_data)."
    raise ValueError(f"Received: source={source!r}; expected {_FORMS}.{hint}")


def load_data(
    source: str = "digits",
    *,
    data_dir: Optional[str] = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    max_train: Optional[int] = None,
    targets: str = "classes",
) -> DataSplits:
    """Load a classification (or, from an ``.npz``, regression) dataset as standardized float32 arrays.

    Held-out split: ``digits`` carves a class-stratified, seeded ``val_fraction`` of the 1,797 images;
    the presets and TFDS use the ``test`` split when the dataset has one (all four presets do; else
    they carve ``val_fraction`` of the training split); an ``.npz`` uses ``x_val``/``y_val`` when
    present (else carves). With
    ``val_fraction=0`` nothing is carved and ``x_val`` is None. Carved splits keep the original order
    within train and within val.

    Labels may be integers ``0..C-1`` (shape ``(N,)`` or ``(N, 1)``), integer-valued floats, or
    one-hot (or soft) rows of shape ``(N, C)``, which are turned into integers by argmax for grouping
    and kept as given in :attr:`DataSplits.targets_train` / ``targets_val`` (``.npz`` sources), so a
    model compiled with ``categorical_crossentropy`` gets its one-hot targets.

    Args:
        source: ``"digits"``, a preset (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``;
            see :data:`PRESETS` for their fixed preprocessing), ``"tfds:NAME[:SPLIT]"`` (train split =
            SPLIT, default ``"train"``) or a path to an ``.npz`` file. See :func:`parse_source`.
        data_dir: TFDS data directory (presets and ``tfds:``). Default: the ``TFDS_DATA_DIR``
            environment variable, else the TFDS default (``~/tensorflow_datasets``). Ignored for other
            sources.
        seed: Seed of the stratified carving and of the ``max_train`` subset of ``digits``/``.npz``.
        val_fraction: Fraction of the training data carved out as held-out data when the source has
            no held-out split, in ``[0, 1)``.
        max_train: Cap on the number of training examples. ``digits`` and ``.npz`` take a seeded,
            class-stratified subset; presets and TFDS read only the first ``max_train`` examples of
            their split (a bit more when they must also carve the held-out part from it).
        targets: ``"classes"`` (default): ``y`` holds class labels. ``"regression"`` (``.npz`` only):
            ``y``/``y_val`` are finite numeric regression targets ``(N, ...)``, loaded unchanged as
            float32 into ``targets_train``/``targets_val`` without any class check; there are no
            classes (``n_classes`` 0, ``y_train`` all -1) and carving/``max_train`` pick at random.

    Returns:
        A :class:`DataSplits`.

    Raises:
        ValueError: Unknown source or TFDS name, bad arguments, an ``.npz`` without ``x``/``y``,
            labels out of range, non-finite inputs, a TFDS set that is not image classification, or
            a preset whose prepared data has another image shape or class count.
        FileNotFoundError: The ``.npz`` file does not exist.
        DataNotFoundError: The TFDS dataset is not prepared in the data directory.

    Example:
        >>> data = load_data("digits", seed=0)
        >>> data.class_names[:3], data.input_shape
        (['0', '1', '2'], (8, 8, 1))
        >>> round(float(data.x_train.mean()), 6) == 0.0
        True
    """
    kind, name, split = parse_source(source)
    if targets not in ("classes", "regression"):
        raise ValueError(f"Received: targets={targets!r}; expected 'classes' or 'regression'.")
    regression = targets == "regression"
    if regression and kind != "npz":
        raise ValueError(
            f"Received: targets='regression' with source {source!r}; expected an '.npz' file (the other "
            "sources are classification datasets). Save the inputs and targets with np.savez(path, x=..., y=...)."
        )
    seed = check_seed(seed)
    val_fraction = check_fraction(
        val_fraction, "val_fraction", fix="0 carves no held-out split; pass e.g. val_fraction=0.2."
    )
    max_train = check_optional_int(max_train, "max_train", fix="Pass None for all examples.")
    rng = np.random.default_rng(seed)

    t = t_val = None  # targets as given for the loss (npz only), sliced like y
    if kind == "digits":
        x, y, x_val, y_val, class_names = _load_digits()
    elif kind == "npz":
        x, y, x_val, y_val, class_names, t, t_val = _load_npz(name, regression=regression)
    elif kind == "preset":
        x, y, x_val, y_val, class_names = read_preset(
            name, data_dir=data_dir, val_fraction=val_fraction, max_train=max_train
        )
    else:
        from keras_stiffness.data.tfds import load_tfds

        x, y, x_val, y_val, class_names = load_tfds(name, split, data_dir, val_fraction, max_train)

    if x_val is None and val_fraction > 0:
        n_val = int(round(len(y) * val_fraction))
        if 0 < n_val < len(y):
            val_idx = stratified_pick(y, n_val, rng)
            train_mask = np.ones(len(y), dtype=bool)
            train_mask[val_idx] = False
            x, y, x_val, y_val = nested.take(x, train_mask), y[train_mask], nested.take(x, val_idx), y[val_idx]
            if t is not None:
                t, t_val = t[train_mask], t[val_idx]
    if max_train is not None and len(y) > max_train:
        keep = np.arange(max_train) if kind in ("tfds", "preset") else stratified_pick(y, max_train, rng)
        x, y = nested.take(x, keep), y[keep]
        if t is not None:
            t = t[keep]

    n_classes = len(class_names)
    for arr, label in ((y, "y"), (y_val, "y_val")):
        if regression:
            break
        if arr is not None and arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(
                f"Received: {label} with labels in [{arr.min()}, {arr.max()}] from {source!r}; "
                f"expected integers in [0, {n_classes}) ({n_classes} class names); fix the labels or "
                "the class_names array."
            )
    for label, leaf in nested.leaves_with_paths(x, "x") + nested.leaves_with_paths(x_val, "x_val"):
        if leaf is not None:
            check_finite(leaf, label)
    if isinstance(x, dict):  # several inputs: each standardized with its own training statistics
        pairs = {k: standardize(x[k], None if x_val is None else x_val[k]) for k in x}
        x = {k: pair[0] for k, pair in pairs.items()}
        x_val = None if x_val is None else {k: pair[1] for k, pair in pairs.items()}
    else:
        x, x_val = standardize(x, x_val)
    return DataSplits(
        name=os.fspath(source),
        x_train=x,
        y_train=y,
        x_val=x_val,
        y_val=y_val,
        class_names=list(class_names),
        input_shape=nested.feature_shapes(x),
        n_classes=n_classes,
        targets_train=t,
        targets_val=t_val,
        target_kind=targets,
    )


def read_preset(
    name: str, *, data_dir: Optional[str] = None, val_fraction: float = 0.2, max_train: Optional[int] = None
) -> tuple:
    """A preset's arrays after its scaling to ``[0, 1]``, before standardization (see :data:`PRESETS`).

    :func:`load_data` calls this for a preset source, then carves a held-out part when there is no
    ``test`` split, applies ``max_train`` and standardizes.

    Args:
        name: A key of :data:`PRESETS`.
        data_dir: TFDS data directory, or None for ``$TFDS_DATA_DIR``, else the TFDS default.
        val_fraction: Only used to read enough training examples under ``max_train`` when the
            prepared data has no ``test`` split (the held-out part is then carved from them).
        max_train: Cap on the training examples read, or None.

    Returns:
        ``(x, y, x_val, y_val, class_names)``: float32 images in ``[0, 1]`` of shape
        ``(N,) + image_shape``, int64 labels, the ``test`` split likewise (None when the prepared data
        has no ``test`` split), and the ClassLabel's names.

    Raises:
        ValueError: ``name`` is not a preset, or the prepared data has another image shape or class
            count than the preset (a different dataset version or config).
        DataNotFoundError: The dataset is not prepared in the data directory.
    """
    if name not in PRESETS:
        raise ValueError(f"Received: preset {name!r}; expected one of {sorted(PRESETS)}.")
    preset = PRESETS[name]
    from keras_stiffness.data.tfds import load_tfds

    x, y, x_val, y_val, class_names = load_tfds(
        preset.tfds_name, "train", data_dir, val_fraction, max_train, source=name
    )
    if tuple(x.shape[1:]) != preset.image_shape or len(class_names) != preset.n_classes or x.dtype != np.uint8:
        raise ValueError(
            f"Received: TFDS data for preset {name!r} with {x.dtype} images of shape {tuple(x.shape[1:])} "
            f"and {len(class_names)} classes; expected uint8 images of shape {preset.image_shape} and "
            f"{preset.n_classes} classes. Prepare the standard '{preset.tfds_name}' dataset, or read this "
            f"one with --data tfds:{preset.tfds_name}."
        )
    return _unit_scale(x), y, (None if x_val is None else _unit_scale(x_val)), y_val, class_names


def _unit_scale(x: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 as float32 in ``[0, 1]``."""
    out = x.astype(np.float32)
    out /= np.float32(255.0)
    return out


def standardize(x_train, *others) -> tuple:
    """Standardize arrays per channel with the statistics of ``x_train`` only.

    The channel is the last axis (for ``(N, H, W, C)`` images, one mean and std per colour channel;
    for ``(N, D)`` features, one per feature; a 1-D array has a single channel). Means and standard
    deviations are computed in float64 in chunks; a channel with std 0 is divided by 1. Inputs are
    never modified.

    Args:
        x_train: Array whose statistics are used, shape ``(N, ...)``.
        *others: Further arrays with the same channel count (or None, passed through).

    Returns:
        A tuple of float32 arrays, ``x_train`` first, then ``others`` in order.

    Raises:
        ValueError: ``x_train`` is empty or an array has a different channel count.

    Example:
        >>> x = np.arange(12.0).reshape(3, 2, 2)
        >>> xs, = standardize(x)
        >>> np.allclose(xs.mean(axis=(0, 1)), 0), np.allclose(xs.std(axis=(0, 1)), 1)
        (True, True)
    """
    x_train = np.asarray(x_train)
    mean, std = channel_stats(x_train)
    out = []
    for i, arr in enumerate((x_train, *others)):
        if arr is None:
            out.append(None)
            continue
        arr = np.asarray(arr)
        if _channel_shape(arr) != mean.shape:
            raise ValueError(
                f"Received: array {i} of shape {arr.shape} to standardize with statistics of "
                f"x_train of shape {x_train.shape}; expected the same last axis (channels) "
                f"{mean.shape}. Pass arrays with matching feature shapes."
            )
        res = np.array(arr, dtype=np.float32, copy=True)
        res -= mean.astype(np.float32)
        res /= std.astype(np.float32)
        out.append(res)
    return tuple(out)


def channel_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) standard deviation, std 0 replaced by 1.

    Args:
        x: Array ``(N, ...)``; the channel is the last axis when ``x.ndim >= 2``.

    Returns:
        ``(mean, std)`` as float64 arrays of shape ``x.shape[-1:]`` (``()`` for 1-D ``x``).

    Raises:
        ValueError: ``x`` is empty.
    """
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise ValueError(
            f"Received: x_train of shape {x.shape}; expected a non-empty array (N, ...) to compute "
            "standardization statistics. Check the data source."
        )
    shape = _channel_shape(x)
    flat = x.reshape(len(x), -1, int(np.prod(shape, dtype=np.int64)))
    rows = max(1, CHUNK_VALUES // max(1, flat.shape[1] * flat.shape[2]))
    count = flat.shape[0] * flat.shape[1]
    total = np.zeros(flat.shape[2])
    for i in range(0, len(flat), rows):
        total += flat[i : i + rows].sum(axis=(0, 1), dtype=np.float64)
    mean = total / count
    sq = np.zeros(flat.shape[2])
    for i in range(0, len(flat), rows):
        sq += ((flat[i : i + rows] - mean) ** 2).sum(axis=(0, 1))
    std = np.sqrt(sq / count)
    std[std == 0] = 1.0
    return mean.reshape(shape), std.reshape(shape)


def stratified_pick(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``n`` indices of ``y`` at random, stratified by class; returned sorted.

    Each class gets its proportional share ``n * n_c / N``, rounded down, and the remaining picks go
    to the classes with the largest remainders (ties: lower class first).

    Args:
        y: 1-D integer labels.
        n: Number of indices, ``0 <= n <= len(y)``.
        rng: Random generator.

    Returns:
        Sorted int64 indices into ``y``.
    """
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n / len(y)
    take = np.floor(quota).astype(np.int64)
    extra = n - int(take.sum())
    if extra:
        order = np.lexsort((np.arange(len(classes)), -(quota - take)))
        take[order[:extra]] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=int(k), replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    return x, y, None, None, [str(int(c)) for c in digits.target_names]


def _load_npz(path: str, regression: bool = False) -> tuple:
    """``(x, y, x_val, y_val, class_names, targets, val_targets)`` from an ``.npz`` archive.

    ``targets``/``val_targets`` are the labels as given when they are one-hot or soft rows (float32;
    ``y``/``y_val`` are then their argmax), else None. With ``regression``, ``y``/``y_val`` are any
    finite numeric targets: ``targets``/``val_targets`` hold them as float32, ``y``/``y_val`` are all
    -1, and ``class_names`` is empty (an archive with a ``class_names`` array is refused).

    One input: arrays ``x`` and ``y``, optionally ``x_val`` with ``y_val``, and ``class_names``.

    Several inputs (a multi-input model): instead of ``x``, one array ``x_NAME`` per input, all with
    the same number of rows, loaded as the dict ``x = {NAME: array}`` that a functional model built
    with ``keras.Model({NAME: keras.Input(...), ...}, ...)`` takes (Keras also matches the names of the
    ``Input`` layers of a list-input model). Held-out inputs are ``x_val_NAME`` for every ``NAME``
    (given with ``y_val``); so ``x_val`` itself and names starting with ``val_`` are not input names.
    ``y`` and ``class_names`` as with one input; ``x`` and ``x_NAME`` together are an error.
    Example: ``np.savez(path, x_image=images, x_meta=features, y=labels)``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Received: source={path!r}, which does not exist (absolute path "
            f"{os.path.abspath(path)!r}); expected an existing .npz file with arrays x and y. "
            "Check the path."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Received: source={path!r}, which is not a NumPy .npz archive; expected a file written "
            "by np.savez(path, x=..., y=...) (optionally x_val, y_val, class_names)."
        )
    with np.load(path, allow_pickle=False) as npz:
        found = sorted(npz.files)
        inputs = [k[2:] for k in found if k.startswith("x_") and k != "x_val" and not k.startswith("x_val_")]
        if inputs and "x" in found:
            raise ValueError(
                f"Received: {path!r} with arrays {found}; expected either 'x' (one input) or 'x_NAME' "
                f"arrays (one per input), not both. Drop 'x' or rename {['x_' + k for k in inputs]}."
            )
        missing = [k for k in ("x", "y") if k not in found and not (k == "x" and inputs)]
        if missing:
            raise ValueError(
                f"Received: {path!r} with arrays {found}; expected arrays 'x' and 'y' (missing "
                f"{missing}), optionally 'x_val', 'y_val', 'class_names'. Save it with "
                "np.savez(path, x=inputs, y=labels)."
            )
        val_keys = ["x_val_" + k for k in inputs] if inputs else ["x_val"]
        has_val = [k in found for k in val_keys]
        if any(has_val) != ("y_val" in found) or (any(has_val) and not all(has_val)):
            raise ValueError(
                f"Received: {path!r} with arrays {found}; expected {', '.join(map(repr, val_keys))} and "
                "'y_val' together or neither. Add the missing one(s) or drop the others."
            )
        if inputs:
            x = {k: npz["x_" + k] for k in inputs}
            x_val = {k: npz["x_val_" + k] for k in inputs} if all(has_val) else None
        else:
            x = npz["x"]
            x_val = npz["x_val"] if "x_val" in found else None
        read_y = _regression_targets if regression else _class_targets
        y, t = read_y(npz["y"], "y")
        y_val, t_val = read_y(npz["y_val"], "y_val") if "y_val" in found else (None, None)
        names = [str(s) for s in npz["class_names"].ravel()] if "class_names" in found else None
    for label, leaf in nested.leaves_with_paths(x, "x"):
        _check_pair(leaf, y, label, "y", path)
        if not (np.issubdtype(leaf.dtype, np.number) or leaf.dtype == bool):
            raise TypeError(f"Received: {path!r} with {label} of dtype {leaf.dtype}; expected numeric inputs.")
    if x_val is not None:
        for (label, leaf), (_, train_leaf) in zip(
            nested.leaves_with_paths(x_val, "x_val"), nested.leaves_with_paths(x, "x")
        ):
            _check_pair(leaf, y_val, label, "y_val", path)
            if leaf.shape[1:] != train_leaf.shape[1:]:
                raise ValueError(
                    f"Received: {path!r} with {label.replace('x_val', 'x', 1)} of shape {train_leaf.shape} "
                    f"and {label} of shape {leaf.shape}; expected the same feature shape. Save matching arrays."
                )
    if regression:
        if names is not None:
            raise ValueError(
                f"Received: {path!r} with a 'class_names' array and targets='regression'; expected no class "
                "names for regression targets. Drop 'class_names', or load class labels (targets='classes')."
            )
        if t_val is not None and t_val.shape[1:] != t.shape[1:]:
            raise ValueError(
                f"Received: {path!r} with y of shape {t.shape} and y_val of shape {t_val.shape}; expected "
                "regression targets of the same shape per example. Save matching arrays."
            )
        return x, y, x_val, y_val, [], t, t_val
    widths = {a.shape[1] for a in (t, t_val) if a is not None}
    if len(widths) > 1:
        raise ValueError(
            f"Received: {path!r} with one-hot/soft y and y_val of different widths {sorted(widths)}; expected "
            "rows of the same width (one column per class). Save matching arrays."
        )
    if names is None:
        top = max(int(y.max()), int(y_val.max()) if y_val is not None and y_val.size else -1)
        names = [str(i) for i in range(max(top + 1, *widths, 0))]
    elif widths and widths != {len(names)}:
        raise ValueError(
            f"Received: {path!r} with {len(names)} class names and one-hot/soft labels of width "
            f"{widths.pop()}; expected one column per class. Fix the labels or the class_names array."
        )
    return x, y, x_val, y_val, names, t, t_val


def _class_targets(y, name: str) -> tuple:
    try:
        return check_targets(y, name)
    except ValueError as exc:
        if np.issubdtype(np.asarray(y).dtype, np.floating):
            raise ValueError(
                f"{exc} If {name} holds regression (non-class) targets, load them with targets='regression' "
                "(kstiff analyze --targets regression)."
            ) from exc
        raise


def _regression_targets(y, name: str) -> tuple:
    from keras_stiffness.data.selection import check_regression_targets

    return check_regression_targets(y, name)


def _check_pair(x, y, xname, yname, path):
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"Received: {path!r} with {xname} of shape {x.shape}; expected a non-empty array (N, ...).")
    if len(x) != len(y):
        raise ValueError(
            f"Received: {path!r} with {len(x)} rows in {xname} and {len(y)} in {yname}; expected one label per example."
        )


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def _channel_shape(x: np.ndarray) -> tuple:
    return x.shape[-1:] if x.ndim >= 2 else ()
