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
from typing import Optional, Sequence

import numpy as np

from keras_stiffness import nested
from keras_stiffness.data.dataset import read_dataset
from keras_stiffness.data.selection import (
    check_xy,
    read_only,
    resolve_classes,
    select_per_class,
    select_random,
    warn_short,
)
from keras_stiffness.data.sources import load_data
from keras_stiffness.validation import check_finite, check_int, check_label_range, check_seed


class ProbeSet:
    """A fixed, seeded, class-stratified subset of training (and optionally held-out) examples.

    For each class, ``min(per_class, available)`` examples are drawn at random without replacement
    (``np.random.default_rng``; the training and held-out parts use two independent streams spawned
    from ``seed``, so adding a held-out part never changes the training probes). A class with fewer
    examples than asked keeps what it has and triggers a ``UserWarning``; a class with no example at
    all still counts in ``n_classes`` (its rows of class matrices are NaN), and is listed in
    :attr:`short_classes`.

    Inputs are copied as float32 and never standardized here: pass them exactly as the model sees
    them (see :func:`keras_stiffness.data.sources.load_data`). The probe arrays are read-only, so
    :attr:`hash` stays valid. No reference to the caller's full arrays is kept.

    Args:
        x: Training inputs ``(M, ...)``; for a model with several inputs, a dict, list or tuple of
            ``(M, ...)`` arrays, every one sliced by the same selected rows.
        y: Training labels: integers ``0..C-1`` of shape ``(M,)`` or ``(M, 1)``, or one-hot
            or soft rows ``(M, C)``: kept as given for the loss (:attr:`targets`), grouped by their argmax.
        per_class: Training probes per class (>= 1). The paper uses about 50 (30 for 100 classes).
        x_val: Held-out inputs with the same feature shape (and nesting) as ``x``, or None.
        y_val: Held-out labels (same forms as ``y``); given together with ``x_val``.
        val_per_class: Held-out probes per class; default ``per_class``.
        class_names: One name per class; default ``"0"``, ``"1"``, ...
        n_classes: Number of classes; default ``len(class_names)``, else the largest label + 1 over
            both parts.
        seed: Non-negative int seeding the selection.
        targets: ``"classes"`` (default): ``y`` holds class labels as above. ``"regression"``: ``y`` is
            any finite numeric target array ``(M, ...)`` (kept as float32 in :attr:`targets`), there are
            no classes (:attr:`n_classes` 0, :attr:`y` all -1, no class matrices), and ``n`` training
            and ``val_n`` held-out probes are drawn at random (seeded, same streams as above). Float
            labels are never taken as regression targets unless asked: in ``"classes"`` mode, float
            ``y`` that are neither integer-valued nor one-hot/soft rows raise a ``ValueError``.
        n: Training probes with ``targets="regression"`` (required there, refused otherwise).
        val_n: Held-out probes with ``targets="regression"``; default ``n``.

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
        >>> reg = ProbeSet(x, x[:, :2] * 0.5, n=30, x_val=x[:40], y_val=x[:40, :2], seed=0, targets="regression")
        >>> reg.n_train, reg.n_val, reg.n_classes, reg.has_classes, reg.label_kind, reg.targets.shape
        (30, 30, 0, False, 'regression', (60, 2))
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
        targets: str = "classes",
        n: Optional[int] = None,
        val_n: Optional[int] = None,
    ):
        regression = _check_targets_kind(targets, n, val_n, class_names, n_classes)
        per_class = check_int(per_class, "per_class")
        if val_per_class is not None:
            val_per_class = check_int(val_per_class, "val_per_class")
        else:
            val_per_class = per_class
        seed = check_seed(seed)
        if (x_val is None) != (y_val is None):
            given, missing = ("x_val", "y_val") if y_val is None else ("y_val", "x_val")
            raise ValueError(
                f"Received: {given} without {missing}; expected both or neither. Pass {missing} too, or drop {given}."
            )
        x, y, targets = check_xy(x, y, "x", "y", regression)
        val_targets = None
        if x_val is not None:
            x_val, y_val, val_targets = check_xy(x_val, y_val, "x_val", "y_val", regression)
            if (
                targets is not None
                and val_targets is not None
                and targets.shape[1:] != val_targets.shape[1:]
                and not regression
            ):
                raise ValueError(
                    f"Received: y of shape {np.shape(targets if targets is not None else y)} and y_val of shape "
                    f"{np.shape(val_targets if val_targets is not None else y_val)}; expected labels of the same "
                    "kind (both class ids, or both one-hot/soft rows of the same width). Convert one of them."
                )
            if nested.feature_shapes(x_val) != nested.feature_shapes(x):
                raise ValueError(
                    f"Received: x of shape {nested.shapes(x)} and x_val of shape {nested.shapes(x_val)}; expected the "
                    "same feature shape (all axes but the first). Preprocess both the same way."
                )
            if regression and targets.shape[1:] != val_targets.shape[1:]:
                raise ValueError(
                    f"Received: y of shape {targets.shape} and y_val of shape {val_targets.shape}; expected "
                    "regression targets of the same shape per example. Preprocess both the same way."
                )
        if regression:
            self._n_classes, self._class_names = 0, []
        else:
            self._n_classes, self._class_names = resolve_classes(y, y_val, class_names, n_classes)
            check_label_range(y, self._n_classes, "y")
        if x_val is not None and (targets is None) != (
            val_targets is None
        ):  # one part as ids, the other as rows: rows for both
            width = (targets if targets is not None else val_targets).shape[1]
            if targets is None:
                targets = np.eye(width, dtype=np.float32)[check_label_range(y, width, "y")]
            else:
                val_targets = np.eye(width, dtype=np.float32)[check_label_range(y_val, width, "y_val")]
        for name, leaf in nested.leaves_with_paths(x, "x"):  # every input of a multi-input x
            check_finite(leaf, name)
        if x_val is not None:
            if not regression:
                check_label_range(y_val, self._n_classes, "y_val")
            for name, leaf in nested.leaves_with_paths(x_val, "x_val"):
                check_finite(leaf, name)

        train_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
        if regression:
            val_n = n if val_n is None else val_n
            per_class, val_per_class = n, val_n
            idx, short = select_random(len(y), n, np.random.default_rng(train_seq), "train"), []
        else:
            idx, short = select_per_class(y, self._n_classes, per_class, np.random.default_rng(train_seq), "train")
        parts_x, parts_y, parts_idx = [nested.take(x, idx)], [y[idx]], [idx]
        parts_t = [targets[idx]] if targets is not None else []
        n_val = 0
        if x_val is not None:
            if regression:
                vidx, vshort = select_random(len(y_val), val_n, np.random.default_rng(val_seq), "val"), []
            else:
                vidx, vshort = select_per_class(
                    y_val, self._n_classes, val_per_class, np.random.default_rng(val_seq), "val"
                )
            parts_x.append(nested.take(x_val, vidx))
            parts_y.append(y_val[vidx])
            parts_idx.append(vidx)
            if val_targets is not None:
                parts_t.append(val_targets[vidx])
            short += vshort
            n_val = len(vidx)
        n = len(idx) + n_val
        if n < 2:
            raise ValueError(
                f"Received: {n} probe(s) in total (per_class={per_class}, {self._n_classes} "
                "class(es)); expected at least 2 so that there is a pair. Raise per_class or pass "
                "more data."
            )
        self._x = nested.map_leaves(lambda a: read_only(a.astype(np.float32, copy=False)), nested.concat(parts_x))
        self._y = read_only(np.concatenate(parts_y).astype(np.int64, copy=False))
        self._indices = read_only(np.concatenate(parts_idx).astype(np.int64, copy=False))
        self._targets = read_only(np.concatenate(parts_t)) if parts_t else None
        self._is_val = read_only(np.arange(n) >= len(idx))
        self._n_train = len(idx)
        self._has_val = x_val is not None
        self._regression = regression
        self._per_class = per_class
        self._val_per_class = val_per_class
        self._seed = seed
        self._short = short
        self._hash: Optional[str] = None
        self.source: Optional[str] = None  # set by from_source; recorded in summary()
        warn_short(short, self._class_names)

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
            >>> import tensorflow as tf
            >>> x, y = np.random.default_rng(0).normal(size=(40, 3)).astype("float32"), np.arange(40) % 2
            >>> ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
            >>> probes = ProbeSet.from_dataset(ds, per_class=5)
            >>> probes.n, probes.counts["train"].tolist()
            (10, [5, 5])
        """
        max_examples = check_int(max_examples, "max_examples", minimum=2)
        x, y = read_dataset(dataset, "dataset", max_examples)
        x_val = y_val = None
        if val_dataset is not None:
            x_val, y_val = read_dataset(val_dataset, "val_dataset", max_examples)
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
        """Build a probe set from a data source of :func:`keras_stiffness.data.sources.load_data`.

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
        cls,
        data,
        *,
        per_class: int = 50,
        val_per_class: Optional[int] = None,
        seed: int = 0,
        n: Optional[int] = None,
        val_n: Optional[int] = None,
        keep_targets: bool = True,
    ) -> "ProbeSet":
        """Build a probe set from loaded :class:`~keras_stiffness.data.sources.DataSplits` (train and held out).

        The loss gets the data's targets as given: one-hot or soft rows when the data carries them
        (``data.targets_train``; :attr:`label_kind` ``"one-hot"``/``"soft"``), else the class ids.
        Data loaded with ``targets="regression"`` gives ``targets="regression"`` probes: ``n`` training
        and ``val_n`` held-out probes at random (``n`` required; ``per_class``/``val_per_class`` unused).

        Args:
            keep_targets: False: class ids for the loss even when the data carries one-hot/soft rows
                (models compiled with ``sparse_categorical_crossentropy``, as ``kstiff train`` builds).

        Example:
            >>> from keras_stiffness.data.sources import load_data
            >>> ProbeSet.from_splits(load_data("digits"), per_class=5).n_train
            50
        """
        if getattr(data, "target_kind", "classes") == "regression":
            probes = cls(
                data.x_train,
                data.targets_train,
                x_val=data.x_val,
                y_val=data.targets_val,
                seed=seed,
                targets="regression",
                n=n,
                val_n=val_n,
            )
            probes.source = data.name
            return probes
        t_train = getattr(data, "targets_train", None) if keep_targets else None
        t_val = getattr(data, "targets_val", None) if keep_targets else None
        probes = cls(
            data.x_train,
            data.y_train if t_train is None else t_train,
            per_class=per_class,
            x_val=data.x_val,
            y_val=data.y_val if t_val is None else t_val,
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
        """``(N, ...)`` float32 read-only probe inputs: training part, then held-out part (for several
        inputs, a dict/list of such arrays, dict keys sorted)."""
        return nested.map_leaves(lambda a: a, self._x)  # a fresh container around the read-only arrays

    @property
    def y(self) -> np.ndarray:
        """``(N,)`` int64 read-only class ids; all ``-1`` (no class) for ``targets="regression"``."""
        return self._y

    @property
    def is_val(self) -> np.ndarray:
        """``(N,)`` bool read-only: True for held-out probes."""
        return self._is_val

    @property
    def targets(self) -> np.ndarray:
        """What the loss is given: the one-hot/soft rows ``(N, C)`` when the labels came as such, else
        :attr:`y` (class ids). Grouping (class matrices) always uses :attr:`y`.

        Example:
            >>> p = ProbeSet(np.zeros((4, 2)), np.eye(2)[[0, 1, 0, 1]], per_class=2)
            >>> p.targets.shape, p.y.tolist(), p.label_kind
            ((4, 2), [0, 0, 1, 1], 'one-hot')
        """
        return self._targets if self._targets is not None else self._y

    @property
    def label_kind(self) -> str:
        """``"class ids"``, ``"one-hot"``, ``"soft"`` or ``"regression"``: how the labels were given (recorded in
        run files)."""
        if self._targets is None:
            return "class ids"
        if self._regression:
            return "regression"
        return "one-hot" if np.isin(self._targets, (0.0, 1.0)).all() else "soft"

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
        """Number of classes, including classes without probes (0 for ``targets="regression"``)."""
        return self._n_classes

    @property
    def has_classes(self) -> bool:
        """False for ``targets="regression"``: no class matrices, within or between stiffness."""
        return self._n_classes > 0

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
        return nested.cut(self._x, 0, self._n_train)

    @property
    def y_train(self) -> np.ndarray:
        """View of the training probes' labels."""
        return self._y[: self._n_train]

    @property
    def x_val(self) -> Optional[np.ndarray]:
        """View of the held-out probes' inputs, or None without a held-out part."""
        return nested.cut(self._x, self._n_train, len(self._y)) if self._has_val else None

    @property
    def y_val(self) -> Optional[np.ndarray]:
        """View of the held-out probes' labels, or None without a held-out part."""
        return self._y[self._n_train :] if self._has_val else None

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """Probes per class: ``{"train": (C,) int64}``, plus ``"val"`` with a held-out part."""

        def count(y):
            return np.bincount(y, minlength=self._n_classes) if self._n_classes else np.zeros(0, np.int64)

        out = {"train": count(self.y_train)}
        if self._has_val:
            out["val"] = count(self.y_val)
        return out

    @property
    def short_classes(self) -> list[tuple[str, int, int, int]]:
        """``(split, class index, available, asked)`` per class with fewer examples than asked."""
        return list(self._short)

    @property
    def hash(self) -> str:
        """SHA-256 hex digest identifying the probe set; a resumed run compares it.

        Hashed, in order: ``x.shape`` as text, then the bytes of ``x`` (little-endian float32,
        C order; several inputs: the structure of shapes as text, then every input's bytes, dict keys
        sorted), ``y`` (little-endian int64), ``is_val`` (one byte each) and ``indices``
        (little-endian int64); then, for soft labels and regression targets, the targets
        (little-endian float32).
        """
        if self._hash is None:
            h = hashlib.sha256(repr(nested.shapes(self._x)).encode())  # one array: its shape tuple
            for leaf in nested.leaves(self._x):  # several inputs: sorted dict keys, list order
                h.update(np.ascontiguousarray(leaf, dtype="<f4").tobytes())
            h.update(np.ascontiguousarray(self._y, dtype="<i8").tobytes())
            h.update(np.ascontiguousarray(self._is_val, dtype=np.uint8).tobytes())
            h.update(np.ascontiguousarray(self._indices, dtype="<i8").tobytes())
            if self.label_kind in ("soft", "regression"):  # one-hot rows say no more than the ids: same hash
                h.update(np.ascontiguousarray(self._targets, dtype="<f4").tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def describe(self) -> dict:
        """A JSON-serializable description of the probe set (for run metadata).

        Returns:
            Dict with ``source``, ``n``, ``n_train``, ``n_val``, ``n_classes``, ``per_class``,
            ``val_per_class``, ``seed``, ``input_shape``, ``counts`` (lists), ``class_names``,
            ``hash`` and ``short_classes`` (list of dicts with ``split``, ``class``, ``name``,
            ``available``, ``asked``). For ``targets="regression"``: ``n_classes`` 0, ``per_class`` and
            ``val_per_class`` are the ``n`` and ``val_n`` asked, no class names or counts.
        """
        return {
            "source": self.source,
            "labels": self.label_kind,
            "n": self.n,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_classes": self._n_classes,
            "per_class": self._per_class,
            "val_per_class": self._val_per_class if self._has_val else None,
            "seed": self._seed,
            "input_shape": nested.map_leaves(lambda a: [int(d) for d in a.shape[1:]], self._x),
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
            f"input_shape={nested.feature_shapes(self._x)}, seed={self._seed})"
        )


def _check_targets_kind(targets, n, val_n, class_names, n_classes) -> bool:
    """True for ``targets="regression"``; checks that the other arguments fit the kind."""
    if targets not in ("classes", "regression"):
        raise ValueError(f"Received: targets={targets!r}; expected 'classes' or 'regression'.")
    if targets == "classes":
        if n is not None or val_n is not None:
            raise ValueError(
                "Received: n/val_n with targets='classes'; expected per_class/val_per_class. Pass "
                "targets='regression' to draw n probes at random without classes."
            )
        return False
    if class_names is not None or n_classes not in (None, 0):
        raise ValueError("Received: class_names/n_classes with targets='regression'; expected neither (no classes).")
    if n is None:
        raise ValueError("Received: targets='regression' without n; expected n, the number of training probes.")
    check_int(n, "n")
    if val_n is not None:
        check_int(val_n, "val_n")
    return True
