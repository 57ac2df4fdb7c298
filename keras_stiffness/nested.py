"""Probe inputs of multi-input models: a dict, list or tuple of arrays, as Keras accepts them.

NumPy only. A *nested* ``x`` is a dict (``{"a": (N, ...), "b": (N, ...)}``) or a list/tuple whose
items are arrays (or are nested themselves); anything else is one array (``np.asarray(x)``), so a
plain list of rows stays one array. Leaves are visited in a fixed order: dict keys sorted (as
``tf.nest`` and ``keras.tree`` do), list/tuple items in order. Every leaf has the probes on its first
axis, all with the same length ``N``.

Example:
    >>> x = {"b": np.zeros((3, 2)), "a": np.ones((3, 4, 1))}
    >>> [path for path, _ in leaves_with_paths(x, "x")], n_rows(x), flat_concat(x).shape
    (["x['a']", "x['b']"], 3, (3, 6))
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import numpy as np


def is_nested(x) -> bool:
    """True for a dict, or a list/tuple of arrays (or of nested structures)."""
    if isinstance(x, dict):
        return True
    if isinstance(x, (list, tuple)) and len(x) > 0:
        return all(isinstance(v, (dict, list, tuple)) or _is_array(v) for v in x) and any(
            isinstance(v, dict) or _is_array(v) for v in x
        )
    return False


def _is_array(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and len(getattr(v, "shape", ())) >= 1


def map_leaves(fn: Callable, x) -> Any:
    """``fn`` applied to every leaf, the structure kept (a single array is one leaf)."""
    if isinstance(x, dict):
        return {k: map_leaves(fn, x[k]) for k in sorted(x, key=str)}
    if is_nested(x):
        return type(x)(map_leaves(fn, v) for v in x)
    return fn(x)


def leaves_with_paths(x, name: str = "x") -> List[Tuple[str, Any]]:
    """``[(path, leaf)]`` in the fixed order (sorted dict keys); a path reads like ``x['a']`` or ``x[0]``."""
    if isinstance(x, dict):
        return [pair for k in sorted(x, key=str) for pair in leaves_with_paths(x[k], f"{name}[{k!r}]")]
    if is_nested(x):
        return [pair for i, v in enumerate(x) for pair in leaves_with_paths(v, f"{name}[{i}]")]
    return [(name, x)]


def leaves(x) -> list:
    """The leaves in the fixed order."""
    return [leaf for _, leaf in leaves_with_paths(x)]


def as_arrays(x) -> Any:
    """Every leaf as a NumPy array (a non-nested ``x`` becomes one array)."""
    return map_leaves(np.asarray, x)


def n_rows(x) -> int:
    """Examples in ``x`` (the first leaf's length)."""
    return len(leaves(x)[0])


def cut(x, lo: int, hi: int) -> Any:
    """Probes ``lo:hi`` of every leaf."""
    return map_leaves(lambda v: v[lo:hi], x)


def take(x, idx) -> Any:
    """Probes ``idx`` (an index array) of every leaf."""
    return map_leaves(lambda v: v[idx], x)


def concat(parts: list) -> Any:
    """Same-structured ``parts`` concatenated leaf by leaf along the first axis."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in sorted(first, key=str)}
    if is_nested(first):
        return type(first)(concat([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts)


def shapes(x) -> Any:
    """The structure with every leaf replaced by its shape."""
    return map_leaves(lambda v: tuple(int(d) for d in np.shape(v)), x)


def feature_shapes(x) -> Any:
    """The structure with every leaf replaced by its shape without the first axis."""
    return map_leaves(lambda v: tuple(int(d) for d in np.shape(v)[1:]), x)


def flat_concat(x) -> np.ndarray:
    """``(N, D)``: every leaf flattened per example, concatenated in the fixed order."""
    parts = [np.asarray(v).reshape(len(v), -1) for v in leaves(x)]
    if len(parts) == 1:
        return parts[0]
    dtype = np.result_type(*parts)
    return np.concatenate([p.astype(dtype, copy=False) for p in parts], axis=1)


def to_tensors(x) -> Any:
    """Every leaf as a TensorFlow tensor (imports TensorFlow)."""
    import tensorflow as tf

    return map_leaves(tf.convert_to_tensor, x)
