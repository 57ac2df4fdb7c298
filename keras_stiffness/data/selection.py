"""Validation and class-stratified selection behind :class:`~keras_stiffness.data.probes.ProbeSet`.

NumPy and the standard library only. Argument checks (:func:`check_xy`, :func:`resolve_classes`;
the generic ones are in :mod:`keras_stiffness.validation`), the seeded per-class draw (:func:`select_per_class`), the
warning for classes with fewer examples than asked (:func:`warn_short`) and read-only copies
(:func:`read_only`). Messages follow the house form "Received: ...; expected ...".
"""

from __future__ import annotations

import warnings

import numpy as np

from keras_stiffness import nested
from keras_stiffness.validation import check_int, check_targets


def check_inputs(x, xname: str):
    """``x`` as NumPy array(s): real numeric, non-empty ``(N, ...)``; a dict/list/tuple of arrays (a
    model with several inputs, see :mod:`keras_stiffness.nested`) has every leaf checked, all of the
    same length ``N``."""
    x = nested.as_arrays(x)
    named = nested.leaves_with_paths(x, xname)
    for name, leaf in named:
        if not (np.issubdtype(leaf.dtype, np.number) or leaf.dtype == bool) or np.iscomplexobj(leaf):
            raise TypeError(
                f"Received: {name} of dtype {leaf.dtype}; expected real numeric inputs (cast to float32). "
                "Convert the inputs to a numeric array."
            )
        if leaf.ndim == 0 or len(leaf) == 0:
            raise ValueError(
                f"Received: {name} of shape {leaf.shape}; expected a non-empty array (N, ...). Pass at "
                "least one example per part."
            )
        if len(leaf) != len(named[0][1]):
            raise ValueError(
                f"Received: {named[0][0]} with {len(named[0][1])} examples and {name} with {len(leaf)}; "
                "expected every input with the same number of examples."
            )
    return x


def check_xy(x, y, xname: str, yname: str, regression: bool = False) -> tuple:
    """``(x, class ids, targets or None)``: numeric non-empty inputs, one label per example.

    Targets are kept (float32) when the labels are one-hot or soft rows (see
    :func:`keras_stiffness.validation.check_targets`): the loss needs them as given. With
    ``regression``, ``y`` is any finite numeric ``(N, ...)`` target array, kept as float32, and the
    class ids are all :data:`NO_CLASS`.
    """
    x = check_inputs(x, xname)
    if regression:
        y, targets = check_regression_targets(y, yname)
    else:
        try:
            y, targets = check_targets(y, yname)
        except ValueError as exc:
            arr = np.asarray(y)
            if np.issubdtype(arr.dtype, np.floating):
                raise ValueError(
                    f"{exc} If {yname} holds regression (non-class) targets, pass targets='regression'."
                ) from exc
            raise
    if len(y) != nested.n_rows(x):
        raise ValueError(
            f"Received: {nested.n_rows(x)} examples in {xname} but {len(y)} labels in {yname}; expected one "
            "label per example. Pass matching arrays."
        )
    return x, y, targets


NO_CLASS = -1
"""The class id of every probe of a probe set without classes (``targets="regression"``)."""


def check_regression_targets(y, name: str) -> tuple:
    """``(ids, targets)`` for regression: ``ids`` all :data:`NO_CLASS`, ``targets`` float32 ``(N, ...)``.

    Example:
        >>> ids, t = check_regression_targets([[0.5, -1.0], [2.0, 0.0]], "y")
        >>> ids.tolist(), t.dtype, t.shape
        ([-1, -1], dtype('float32'), (2, 2))
    """
    arr = np.asarray(y)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(
            f"Received: {name} of dtype {arr.dtype}; expected real numeric regression targets. Convert them."
        )
    if arr.ndim == 0:
        raise ValueError(f"Received: scalar {name}; expected one target per example, (N,) or (N, ...).")
    targets = arr.astype(np.float32)
    if not np.isfinite(targets).all():
        raise ValueError(f"Received: {name} with non-finite values; expected finite regression targets.")
    return np.full(len(targets), NO_CLASS, np.int64), targets


def select_random(m: int, asked: int, rng, split: str) -> np.ndarray:
    """``min(asked, m)`` sorted random indices of ``range(m)`` (no classes); warns when ``m < asked``."""
    if m < asked:
        warnings.warn(
            f"ProbeSet: the {split} part has {m} examples, fewer than the {asked} asked; took all of them.",
            UserWarning,
            stacklevel=3,
        )
    return np.sort(rng.choice(m, size=min(asked, m), replace=False)).astype(np.int64)


def resolve_classes(y, y_val, class_names, n_classes) -> tuple[int, list[str]]:
    if class_names is not None:
        if isinstance(class_names, str):
            raise TypeError(
                f"Received: class_names={class_names!r}; expected a sequence of names, one per "
                "class, e.g. ['cat', 'dog']."
            )
        class_names = [str(c) for c in class_names]
    if n_classes is not None:
        n_classes = check_int(n_classes, "n_classes")
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


def select_per_class(y, n_classes, asked, rng, split) -> tuple[np.ndarray, list]:
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


def warn_short(short, class_names) -> None:
    for split in ("train", "val"):
        rows = [(c, a, k) for s, c, a, k in short if s == split]
        if not rows:
            continue
        detail = "; ".join(f"class {c} ({class_names[c]!r}): {a} available, {k} asked" for c, a, k in rows)
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


def read_only(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a
