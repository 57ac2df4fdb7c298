"""The fixed, class-stratified probe set on which stiffness is measured.

NumPy only at import; TensorFlow is imported inside :meth:`ProbeSet.from_dataset` and TFDS inside
:meth:`ProbeSet.from_source` (TFDS sources only).

Probe order (the ``N`` axis everywhere in this toolkit): the training part first, then the held-out
part; within each part by class (0, 1, ...), and within a class by increasing index in the source
array. ``indices[i]`` is the row of probe ``i`` in its source array (``x`` for the training part,
``x_val`` for the held-out part).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Optional, Sequence

import numpy as np

from keras_stiffness.data import _check_seed, check_finite, load_data, normalize_labels

_BATCH = 1024  # batch size used to read unbatched tf.data datasets


class ProbeSet:
    """A fixed, seeded, class-stratified subset of training (and optionally held-out) examples.

    For each class, ``min(per_class, available)`` examples are drawn at random without replacement
    (``np.random.default_rng``; the training and held-out parts use two independent streams spawned
    from ``seed``, so adding a held-out part never changes the training probes). A class with fewer
    examples than asked keeps what it has and triggers a ``UserWarning``; a class with no example at
    all still counts in ``n_classes`` (its rows of class matrices are NaN), and is listed in
    :attr:`short_classes`.

    Inputs are copied as float32 and never standardized here: pass them exactly as the model sees
    them (see :func:`keras_stiffness.data.load_data`). The probe arrays are read-only, so
    :attr:`hash` stays valid. No reference to the caller's full arrays is kept.

    Args:
        x: Training inputs ``(M, ...)``.
        y: Training labels: integers ``0..C-1`` of shape ``(M,)`` or ``(M, 1)``, or one-hot
            ``(M, C)`` (converted by argmax).
        per_class: Training probes per class (>= 1). The paper uses about 50 (30 for 100 classes).
        x_val: Held-out inputs with the same feature shape as ``x``, or None.
        y_val: Held-out labels (same forms as ``y``); given together with ``x_val``.
        val_per_class: Held-out probes per class; default ``per_class``.
        class_names: One name per class; default ``"0"``, ``"1"``, ...
        n_classes: Number of classes; default ``len(class_names)``, else the largest label + 1 over
            both parts.
        seed: Non-negative int seeding the selection.

    Raises:
        TypeError: Non-numeric inputs or labels, or arguments of the wrong type.
        ValueError: Mismatched lengths or shapes, labels out of range or not integer-valued,
            non-finite inputs, empty inputs, ``per_class < 1``, ``x_val`` without ``y_val`` (or the
            reverse), or fewer than 2 probes in total.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(200, 4)).astype("float32"), np.arange(200) % 4
        >>> probes = ProbeSet(x, y, per_class=5, x_val=x[:40], y_val=y[:40], seed=0)
        >>> probes.n_train, probes.n_val, probes.n_classes
        (20, 20, 4)
        >>> probes.y[:7].tolist(), bool(probes.is_val[20])
        ([0, 0, 0, 0, 0, 1, 1], True)
    """

    def __init__(
        self,
        x,
        y,
        *,
        per_class: int = 50,
        x_val=None,
        y_val=None,
        val_per_class: Optional[int] = None,
        class_names: Optional[Sequence[str]] = None,
        n_classes: Optional[int] = None,
        seed: int = 0,
    ):
        per_class = _check_count(per_class, "per_class")
        if val_per_class is not None:
            val_per_class = _check_count(val_per_class, "val_per_class")
        else:
            val_per_class = per_class
        seed = _check_seed(seed)
        if (x_val is None) != (y_val is None):
            given, missing = ("x_val", "y_val") if y_val is None else ("y_val", "x_val")
            raise ValueError(
                f"Received: {given} without {missing}; expected both or neither. Pass {missing} "
                f"too, or drop {given}."
            )
        x, y = _check_xy(x, y, "x", "y")
        if x_val is not None:
            x_val, y_val = _check_xy(x_val, y_val, "x_val", "y_val")
            if x_val.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"Received: x of shape {x.shape} and x_val of shape {x_val.shape}; expected the "
                    "same feature shape (all axes but the first). Preprocess both the same way."
                )
        self._n_classes, self._class_names = _resolve_classes(y, y_val, class_names, n_classes)
        _check_range(y, "y", self._n_classes)
        check_finite(x, "x")
        if x_val is not None:
            _check_range(y_val, "y_val", self._n_classes)
            check_finite(x_val, "x_val")

        train_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
        idx, short = _select(y, self._n_classes, per_class, np.random.default_rng(train_seq), "train")
        parts_x, parts_y, parts_idx = [x[idx]], [y[idx]], [idx]
        n_val = 0
        if x_val is not None:
            vidx, vshort = _select(
                y_val, self._n_classes, val_per_class, np.random.default_rng(val_seq), "val"
            )
            parts_x.append(x_val[vidx])
            parts_y.append(y_val[vidx])
            parts_idx.append(vidx)
            short += vshort
            n_val = len(vidx)
        n = len(idx) + n_val
        if n < 2:
            raise ValueError(
                f"Received: {n} probe(s) in total (per_class={per_class}, {self._n_classes} "
                "class(es)); expected at least 2 so that there is a pair. Raise per_class or pass "
                "more data."
            )
        self._x = _frozen(np.concatenate(parts_x).astype(np.float32, copy=False))
        self._y = _frozen(np.concatenate(parts_y).astype(np.int64, copy=False))
        self._indices = _frozen(np.concatenate(parts_idx).astype(np.int64, copy=False))
        self._is_val = _frozen(np.arange(n) >= len(idx))
        self._n_train = len(idx)
        self._has_val = x_val is not None
        self._per_class = per_class
        self._val_per_class = val_per_class
        self._seed = seed
        self._short = short
        self._hash: Optional[str] = None
        self.source: Optional[str] = None  # set by from_source; recorded in summary()
        _warn_short(short, self._class_names)

    # --------------------------------------------------------------------------------------------
    # Constructors
    # --------------------------------------------------------------------------------------------

    @classmethod
    def from_dataset(
        cls,
        dataset,
        *,
        per_class: int = 50,
        val_dataset=None,
        val_per_class: Optional[int] = None,
        class_names: Optional[Sequence[str]] = None,
        n_classes: Optional[int] = None,
        seed: int = 0,
        max_examples: int = 100_000,
    ) -> "ProbeSet":
        """Build a probe set from a ``tf.data.Dataset`` of ``(x, y)`` (or ``(x, y, weight)``).

        Batched and unbatched datasets are both accepted, told apart by the element spec: a label
        of rank 0 (class index), or of rank 1 with a known size different from the inputs' leading
        size (one-hot vector), is one example; a label of rank 2, or of rank 1 with an unknown size
        or the same size as the inputs' leading axis, is a batch. (An unbatched one-hot label whose
        size equals the inputs' first axis is thus read as a batch: batch such datasets first.)
        At most ``max_examples`` examples are read per dataset, in iteration order (a warning says
        so when more exist); ``indices`` are positions in that order, so use a dataset that is not
        reshuffled between iterations if the probe set is to be rebuilt.

        Args:
            dataset: Training ``tf.data.Dataset``.
            per_class: Training probes per class.
            val_dataset: Optional held-out ``tf.data.Dataset`` of the same form.
            val_per_class: Held-out probes per class; default ``per_class``.
            class_names: One name per class.
            n_classes: Number of classes.
            seed: Selection seed.
            max_examples: Cap on examples read from each dataset (>= 2).

        Returns:
            A :class:`ProbeSet`.

        Raises:
            TypeError: ``dataset`` is not a ``tf.data.Dataset`` of ``(x, y)`` tuples.
            ValueError: As for the constructor.

        Example:
            >>> import tensorflow as tf  # doctest: +SKIP
            >>> ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # doctest: +SKIP
            >>> probes = ProbeSet.from_dataset(ds, per_class=10)  # doctest: +SKIP
        """
        max_examples = _check_count(max_examples, "max_examples", minimum=2)
        x, y = _read_dataset(dataset, "dataset", max_examples)
        x_val = y_val = None
        if val_dataset is not None:
            x_val, y_val = _read_dataset(val_dataset, "val_dataset", max_examples)
        return cls(
            x,
            y,
            per_class=per_class,
            x_val=x_val,
            y_val=y_val,
            val_per_class=val_per_class,
            class_names=class_names,
            n_classes=n_classes,
            seed=seed,
        )

    @classmethod
    def from_source(
        cls,
        source: str = "digits",
        *,
        per_class: int = 50,
        val_per_class: Optional[int] = None,
        data_dir: Optional[str] = None,
        seed: int = 0,
    ) -> "ProbeSet":
        """Build a probe set from a data source of :func:`keras_stiffness.data.load_data`.

        The inputs are standardized as ``load_data`` does (so they match a model trained on its
        output with the same ``seed``), and its held-out split gives the held-out probes.

        Args:
            source: ``"digits"``, ``"tfds:NAME[:SPLIT]"`` or a path to an ``.npz``.
            per_class: Training probes per class.
            val_per_class: Held-out probes per class; default ``per_class``.
            data_dir: TFDS data directory (see ``load_data``).
            seed: Seed of both the data split and the probe selection.

        Returns:
            A :class:`ProbeSet` whose ``source`` attribute is ``source``.

        Example:
            >>> probes = ProbeSet.from_source("digits", per_class=10)
            >>> probes.x.shape, probes.n_val
            ((200, 8, 8, 1), 100)
        """
        data = load_data(source, data_dir=data_dir, seed=seed)
        return cls.from_splits(data, per_class=per_class, val_per_class=val_per_class, seed=seed)

    @classmethod
    def from_splits(
        cls, data, *, per_class: int = 50, val_per_class: Optional[int] = None, seed: int = 0
    ) -> "ProbeSet":
        """Build a probe set from loaded :class:`~keras_stiffness.data.DataSplits` (train and held out).

        Example:
            >>> from keras_stiffness.data import load_data
            >>> ProbeSet.from_splits(load_data("digits"), per_class=5).n_train
            50
        """
        probes = cls(
            data.x_train,
            data.y_train,
            per_class=per_class,
            x_val=data.x_val,
            y_val=data.y_val,
            val_per_class=val_per_class,
            class_names=data.class_names,
            n_classes=data.n_classes,
            seed=seed,
        )
        probes.source = data.name
        return probes

    # --------------------------------------------------------------------------------------------
    # Arrays and sizes
    # --------------------------------------------------------------------------------------------

    @property
    def x(self) -> np.ndarray:
        """``(N, ...)`` float32 read-only probe inputs: training part, then held-out part."""
        return self._x

    @property
    def y(self) -> np.ndarray:
        """``(N,)`` int64 read-only labels."""
        return self._y

    @property
    def is_val(self) -> np.ndarray:
        """``(N,)`` bool read-only: True for held-out probes."""
        return self._is_val

    @property
    def indices(self) -> np.ndarray:
        """``(N,)`` int64 read-only: row of each probe in its source array (train or val)."""
        return self._indices

    @property
    def class_names(self) -> list[str]:
        """One name per class (a copy)."""
        return list(self._class_names)

    @property
    def n_classes(self) -> int:
        """Number of classes, including classes without probes."""
        return self._n_classes

    @property
    def n_train(self) -> int:
        """Number of training probes."""
        return self._n_train

    @property
    def n_val(self) -> int:
        """Number of held-out probes (0 without a held-out part)."""
        return len(self._y) - self._n_train

    @property
    def has_val(self) -> bool:
        """Whether a held-out part was given."""
        return self._has_val

    @property
    def n(self) -> int:
        """Total number of probes ``N``."""
        return len(self._y)

    def __len__(self) -> int:
        return len(self._y)

    @property
    def x_train(self) -> np.ndarray:
        """View of the training probes' inputs."""
        return self._x[: self._n_train]

    @property
    def y_train(self) -> np.ndarray:
        """View of the training probes' labels."""
        return self._y[: self._n_train]

    @property
    def x_val(self) -> Optional[np.ndarray]:
        """View of the held-out probes' inputs, or None without a held-out part."""
        return self._x[self._n_train :] if self._has_val else None

    @property
    def y_val(self) -> Optional[np.ndarray]:
        """View of the held-out probes' labels, or None without a held-out part."""
        return self._y[self._n_train :] if self._has_val else None

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """Probes per class: ``{"train": (C,) int64}``, plus ``"val"`` with a held-out part."""
        out = {"train": np.bincount(self.y_train, minlength=self._n_classes)}
        if self._has_val:
            out["val"] = np.bincount(self.y_val, minlength=self._n_classes)
        return out

    @property
    def short_classes(self) -> list[tuple[str, int, int, int]]:
        """``(split, class index, available, asked)`` per class with fewer examples than asked."""
        return list(self._short)

    @property
    def hash(self) -> str:
        """SHA-256 hex digest identifying the probe set; a resumed run compares it.

        Hashed, in order: ``x.shape`` as text, then the bytes of ``x`` (little-endian float32,
        C order), ``y`` (little-endian int64), ``is_val`` (one byte each) and ``indices``
        (little-endian int64).
        """
        if self._hash is None:
            h = hashlib.sha256(repr(tuple(self._x.shape)).encode())
            h.update(np.ascontiguousarray(self._x, dtype="<f4").tobytes())
            h.update(np.ascontiguousarray(self._y, dtype="<i8").tobytes())
            h.update(np.ascontiguousarray(self._is_val, dtype=np.uint8).tobytes())
            h.update(np.ascontiguousarray(self._indices, dtype="<i8").tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def summary(self) -> dict:
        """A JSON-serializable description of the probe set (for run metadata).

        Returns:
            Dict with ``source``, ``n``, ``n_train``, ``n_val``, ``n_classes``, ``per_class``,
            ``val_per_class``, ``seed``, ``input_shape``, ``counts`` (lists), ``class_names``,
            ``hash`` and ``short_classes`` (list of dicts with ``split``, ``class``, ``name``,
            ``available``, ``asked``).
        """
        return {
            "source": self.source,
            "n": self.n,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_classes": self._n_classes,
            "per_class": self._per_class,
            "val_per_class": self._val_per_class if self._has_val else None,
            "seed": self._seed,
            "input_shape": [int(d) for d in self._x.shape[1:]],
            "counts": {k: [int(c) for c in v] for k, v in self.counts.items()},
            "class_names": self.class_names,
            "hash": self.hash,
            "short_classes": [
                {"split": s, "class": c, "name": self._class_names[c], "available": a, "asked": k}
                for s, c, a, k in self._short
            ],
        }

    def __repr__(self) -> str:
        return (
            f"ProbeSet(n_train={self.n_train}, n_val={self.n_val}, n_classes={self._n_classes}, "
            f"input_shape={tuple(self._x.shape[1:])}, seed={self._seed})"
        )


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Received: {name}={value!r}; expected an int >= {minimum}.")
    if value < minimum:
        raise ValueError(
            f"Received: {name}={value}; expected an int >= {minimum}. Pass a larger {name}."
        )
    return int(value)


def _check_xy(x, y, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise TypeError(
            f"Received: {xname} of dtype {x.dtype}; expected real numeric inputs (cast to float32). "
            "Convert the inputs to a numeric array."
        )
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(
            f"Received: {xname} of shape {x.shape}; expected a non-empty array (N, ...). Pass at "
            "least one example per part."
        )
    y = normalize_labels(y, yname)
    if len(y) != len(x):
        raise ValueError(
            f"Received: {len(x)} examples in {xname} but {len(y)} labels in {yname}; expected one "
            "label per example. Pass matching arrays."
        )
    return x, y


def _resolve_classes(y, y_val, class_names, n_classes) -> tuple[int, list[str]]:
    if class_names is not None:
        if isinstance(class_names, str):
            raise TypeError(
                f"Received: class_names={class_names!r}; expected a sequence of names, one per "
                "class, e.g. ['cat', 'dog']."
            )
        class_names = [str(c) for c in class_names]
    if n_classes is not None:
        n_classes = _check_count(n_classes, "n_classes")
        if class_names is not None and len(class_names) != n_classes:
            raise ValueError(
                f"Received: n_classes={n_classes} and {len(class_names)} class_names; expected one "
                "name per class. Pass matching values, or only one of them."
            )
    elif class_names is not None:
        n_classes = len(class_names)
        if n_classes == 0:
            raise ValueError("Received: class_names=[]; expected one name per class.")
    else:
        top = max(int(y.max()), int(y_val.max()) if y_val is not None else -1)
        n_classes = max(top + 1, 1)
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    return n_classes, class_names


def _check_range(y: np.ndarray, name: str, n_classes: int) -> None:
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Received: {name} with {int(bad.sum())} label(s) outside [0, {n_classes}) (first "
            f"{name}[{first}]={int(y[first])}; labels span [{int(y.min())}, {int(y.max())}]); "
            f"expected integers 0..{n_classes - 1} for n_classes={n_classes}. Remap the labels "
            "(e.g. np.unique(y, return_inverse=True)) or pass n_classes/class_names covering them."
        )


def _select(y, n_classes, asked, rng, split) -> tuple[np.ndarray, list]:
    """Per class: ``min(asked, available)`` random indices, sorted; classes in order."""
    order = np.argsort(y, kind="stable")
    bounds = np.searchsorted(y[order], np.arange(n_classes + 1))
    chosen, short = [], []
    for c in range(n_classes):
        pool = order[bounds[c] : bounds[c + 1]]
        k = min(asked, len(pool))
        if k < asked:
            short.append((split, c, int(len(pool)), int(asked)))
        chosen.append(np.sort(rng.choice(pool, size=k, replace=False)))
    return np.concatenate(chosen).astype(np.int64), short


def _warn_short(short, class_names) -> None:
    for split in ("train", "val"):
        rows = [(c, a, k) for s, c, a, k in short if s == split]
        if not rows:
            continue
        detail = "; ".join(
            f"class {c} ({class_names[c]!r}): {a} available, {k} asked" for c, a, k in rows
        )
        few = [c for c, a, _ in rows if a < 2]
        note = (
            f" Classes {few} have fewer than 2 probes: they give no within-class pairs and their "
            "class-matrix rows will be NaN (they are kept in n_classes)."
            if few
            else ""
        )
        warnings.warn(
            f"ProbeSet: {len(rows)} class(es) of the {split} part have fewer examples than asked; "
            f"took all available. {detail}.{note} Lower per_class/val_per_class or pass more "
            "data to balance the probe set.",
            UserWarning,
            stacklevel=3,
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _read_dataset(dataset, name: str, max_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Read up to ``max_examples`` ``(x, y)`` examples of a tf.data dataset into NumPy arrays."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"Received: {name} of type {type(dataset).__name__}; expected a tf.data.Dataset of "
            "(x, y) tuples. For arrays use ProbeSet(x, y, ...)."
        )
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) in (2, 3)) or not all(
        isinstance(s, tf.TensorSpec) for s in spec[:2]
    ):
        raise TypeError(
            f"Received: {name} with elements {spec}; expected (x, y) or (x, y, sample_weight) "
            "tuples of tensors. Map it first, e.g. ds.map(lambda d: (d['image'], d['label']))."
        )
    x_shape, y_shape = spec[0].shape, spec[1].shape
    if y_shape.rank is None or x_shape.rank is None:
        raise ValueError(
            f"Received: {name} with x shape {x_shape} and y shape {y_shape}; expected known ranks "
            "to tell batched from unbatched data. Set shapes (e.g. with ensure_shape) first."
        )
    batched = y_shape.rank == 2 or (
        y_shape.rank == 1 and x_shape.rank >= 1 and (y_shape[0] is None or x_shape[0] == y_shape[0])
    )
    if y_shape.rank > 2:
        raise ValueError(
            f"Received: {name} with labels of shape {y_shape}; expected integer labels (scalar per "
            "example) or one-hot vectors. Map the labels first."
        )
    if not batched:
        dataset = dataset.batch(_BATCH)
    xs, ys, total, truncated = [], [], 0, False
    for element in dataset.as_numpy_iterator():
        xb, yb = element[0], element[1]
        if total >= max_examples:
            truncated = True
            break
        take = min(len(xb), max_examples - total)
        truncated = take < len(xb)
        xs.append(xb[:take])
        ys.append(yb[:take])
        total += take
    if truncated:
        warnings.warn(
            f"ProbeSet.from_dataset: read only the first {max_examples} examples of {name}; the "
            "probes are drawn from those. Pass a larger max_examples to read more.",
            UserWarning,
            stacklevel=3,
        )
    if not xs:
        raise ValueError(
            f"Received: an empty {name}; expected at least one (x, y) example. Check the pipeline."
        )
    return np.concatenate(xs), np.concatenate(ys)
