"""Validation and class-stratified selection behind :class:`~keras_stiffness.data.probes.ProbeSet`.

NumPy and the standard library only. Argument checks (:func:`check_xy`, :func:`resolve_classes`;
the generic ones are in :mod:`keras_stiffness.validation`), the seeded per-class draw (:func:`select_per_class`), the
warning for classes with fewer examples than asked (:func:`warn_short`) and read-only copies
(:func:`read_only`). Messages follow the house form "Received: ...; expected ...".
"""

from __future__ import annotations

import warnings

import numpy as np

from keras_stiffness.validation import check_int, check_targets


def check_xy(x, y, xname: str, yname: str) -> tuple:
    """``(x, class ids, targets or None)``: numeric non-empty inputs, one label per example.

    Targets are kept (float32) when the labels are one-hot or soft rows (see
    :func:`keras_stiffness.validation.check_targets`): the loss needs them as given.
    """
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
    y, targets = check_targets(y, yname)
    if len(y) != len(x):
        raise ValueError(
            f"Received: {len(x)} examples in {xname} but {len(y)} labels in {yname}; expected one "
            "label per example. Pass matching arrays."
        )
    return x, y, targets


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
