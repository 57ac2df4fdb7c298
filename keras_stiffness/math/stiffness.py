"""From a Gram matrix of per-example gradients to stiffness and its class aggregates. NumPy only.

``G[i, j] = g_i · g_j`` for the per-example loss gradients ``g_i`` of ``N`` probes. Two measures:

- ``"sign"``: ``sign(G[i, j])``;
- ``"cos"``: ``G[i, j] / sqrt(G[i, i] G[j, j])``.

Conventions (see ``STIFFNESS.md``):

- A probe is *zero-norm* when ``G[i, i] <= 1e-30 * max(diag(G))`` (so exactly 0, and any non-positive
  diagonal entry, which a Gram matrix has only through rounding, is zero-norm too; when every diagonal
  entry is 0 all probes are zero-norm). Its row and column have stiffness 0 in both measures, never NaN.
- Sign stiffness treats ``|G[i, j]| <= 1e-12 sqrt(G[i, i] G[j, j])`` as rounding noise: sign 0.
- Self-pairs ``i == j`` are never averaged into class means (the v3 reading).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from keras_stiffness.math.record import MEASURES as MEASURE_NAMES
from keras_stiffness.validation import check_int, check_label_range, check_square

ZERO_NORM_RTOL = 1e-30
SIGN_RTOL = 1e-12


def probe_labels(labels, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
    """``labels`` as an int64 vector of one class per probe, ``n`` of them, in ``[0, n_classes)``.

    Raises:
        TypeError: Non-integer labels.
        ValueError: Wrong length, or a label out of range.

    Example:
        >>> probe_labels([0, 1, 1], 3, 2).tolist()
        [0, 1, 1]
    """
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(
            f"Received: {name} with shape {arr.shape}; expected ({n},), one label per probe; "
            f"fix: pass one integer class per row/column of the matrix."
        )
    return check_label_range(arr, n_classes, name, fix="Pass the right n_classes or remap the labels.")


def check_measures(measures: Sequence[str]) -> Tuple[str, ...]:
    """Validate measure names and return them in canonical order (``"sign"`` before ``"cos"``).

    Raises:
        ValueError: Empty, duplicated or unknown names.

    Example:
        >>> check_measures(["cos", "sign"])
        ('sign', 'cos')
    """
    if isinstance(measures, str):
        measures = (measures,)
    measures = tuple(measures)
    unknown = [m for m in measures if m not in MEASURE_NAMES]
    if not measures or unknown or len(set(measures)) != len(measures):
        raise ValueError(
            f"Received: measures={measures!r}; expected a non-empty subset of {MEASURE_NAMES} "
            f"without duplicates; fix: pass e.g. ('sign', 'cos')."
        )
    return tuple(m for m in MEASURE_NAMES if m in measures)


def zero_norm_mask(gram) -> np.ndarray:
    """Boolean ``(N,)`` mask of zero-norm probes: ``G[i, i] <= 1e-30 * max(diag(G))``.

    Example:
        >>> zero_norm_mask([[1.0, 0.0], [0.0, 0.0]]).tolist()
        [False, True]
    """
    diag = np.diagonal(check_square(gram))
    scale = max(float(diag.max()), 0.0) if diag.size else 0.0
    return diag <= ZERO_NORM_RTOL * scale


def _cosine(gram: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine stiffness of an already validated Gram matrix."""
    zero = zero_norm_mask(gram)
    inv = np.zeros(gram.shape[0])
    inv[~zero] = 1.0 / np.sqrt(np.diagonal(gram)[~zero])
    with np.errstate(over="ignore", invalid="ignore"):
        s = gram * inv[:, None]
        s *= inv[None, :]
    s[zero, :] = 0.0
    s[:, zero] = 0.0
    np.clip(s, -1.0, 1.0, out=s)
    idx = np.flatnonzero(~zero)
    s[idx, idx] = 1.0
    return s, zero


def _sign_from_cosine(cos: np.ndarray) -> np.ndarray:
    s = np.sign(cos)
    s[np.abs(cos) <= SIGN_RTOL] = 0.0
    return s


def cosine_stiffness(gram) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine stiffness ``S[i, j] = G[i, j] / sqrt(G[i, i] G[j, j])``, clipped to [-1, 1].

    Args:
        gram: ``(N, N)`` Gram matrix of per-example gradients.

    Returns:
        ``(S, zero_mask)``: float64 ``(N, N)`` stiffness (0 on rows/columns of zero-norm probes, 1 on
        the diagonal otherwise) and the boolean ``(N,)`` mask of zero-norm probes.

    Raises:
        ValueError: ``gram`` is not square or not finite.

    Example:
        >>> g = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        >>> s, zero = cosine_stiffness(g @ g.T)
        >>> np.round(s, 3).tolist(), zero.tolist()
        ([[1.0, 0.707, 0.0], [0.707, 1.0, 0.0], [0.0, 0.0, 0.0]], [False, False, True])
    """
    return _cosine(check_square(gram))


def sign_stiffness(gram) -> np.ndarray:
    """Sign stiffness ``sign(G[i, j])`` as float64 in {-1, 0, 1}.

    Entries with ``|G[i, j]| <= 1e-12 sqrt(G[i, i] G[j, j])`` (rounding level) and rows/columns of
    zero-norm probes are 0.

    Example:
        >>> sign_stiffness([[4.0, -1.0], [-1.0, 1.0]]).tolist()
        [[1.0, -1.0], [-1.0, 1.0]]
    """
    return _sign_from_cosine(_cosine(check_square(gram))[0])


def stiffness(gram, measure: str) -> np.ndarray:
    """Stiffness matrix for ``measure`` in {"sign", "cos"}.

    Raises:
        ValueError: Unknown measure, or a bad ``gram``.

    Example:
        >>> stiffness([[1.0, 0.5], [0.5, 1.0]], "cos").tolist()
        [[1.0, 0.5], [0.5, 1.0]]
    """
    if measure not in MEASURE_NAMES:
        raise ValueError(f"Received: measure={measure!r}; expected one of {MEASURE_NAMES}; fix: pass 'sign' or 'cos'.")
    return stiffness_matrices(gram, (measure,))[0][measure]


def stiffness_matrices(gram, measures: Sequence[str] = MEASURE_NAMES) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """All requested stiffness matrices of one Gram matrix, each computed once.

    Returns:
        ``({measure: S}, zero_mask)``.

    Example:
        >>> mats, zero = stiffness_matrices([[1.0, -0.2], [-0.2, 1.0]])
        >>> float(mats["sign"][0, 1]), float(mats["cos"][0, 1]), int(zero.sum())
        (-1.0, -0.2, 0)
    """
    measures = check_measures(measures)
    cos, zero = _cosine(check_square(gram))
    out = {}
    if "sign" in measures:
        out["sign"] = _sign_from_cosine(cos)
    if "cos" in measures:
        out["cos"] = cos
    return out, zero


def _class_sums(S, labels_a, labels_b, n_classes: int, same_set: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Sum of stiffness and number of pairs per directed class pair ``(a, b)``; see class_stiffness."""
    n_classes = check_int(n_classes, "n_classes")
    s = np.asarray(S, dtype=np.float64)
    if s.ndim != 2 or not np.isfinite(s).all():
        raise ValueError(
            f"Received: S with shape {s.shape} (finite: {bool(np.isfinite(s).all())}); expected a finite "
            f"2-D block (rows = first set, columns = second set); fix: pass a stiffness block."
        )
    la = probe_labels(labels_a, s.shape[0], n_classes, "labels_a")
    lb = probe_labels(labels_b, s.shape[1], n_classes, "labels_b")
    if same_set and (s.shape[0] != s.shape[1] or not np.array_equal(la, lb)):
        raise ValueError(
            "Received: same_set=True with different row and column probes; expected a square block "
            "with labels_a == labels_b; fix: pass same_set=False for a block between two sets."
        )
    eye = np.eye(n_classes)
    onehot_a, onehot_b = eye[la], eye[lb]  # (Na, C), (Nb, C)
    sums = onehot_a.T @ (s @ onehot_b)
    counts = np.outer(np.bincount(la, minlength=n_classes), np.bincount(lb, minlength=n_classes))
    if same_set:  # remove the self-pairs i == j, which sit on the class diagonal
        sums[np.diag_indices(n_classes)] -= np.bincount(la, weights=np.diagonal(s), minlength=n_classes)
        counts[np.diag_indices(n_classes)] -= np.bincount(la, minlength=n_classes)
    return sums, counts.astype(np.int64)


def class_stiffness(S, labels_a, labels_b, n_classes: int, same_set: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Directed class stiffness matrix: mean of ``S[i, j]`` over ``i`` in class ``a``, ``j`` in class ``b``.

    Args:
        S: ``(Na, Nb)`` stiffness block; rows = first set (where the step is taken), columns = second.
        labels_a: ``(Na,)`` integer classes of the rows.
        labels_b: ``(Nb,)`` integer classes of the columns.
        n_classes: Number of classes ``C``.
        same_set: True when rows and columns are the same probes: self-pairs ``i == j`` are excluded.

    Returns:
        ``(matrix, counts)``: float64 ``(C, C)`` means (NaN where there is no pair) and int64 ``(C, C)``
        pair counts (ordered pairs, so a same-set diagonal entry counts ``n_a (n_a - 1)``).

    Raises:
        ValueError: Bad shapes, non-finite ``S``, labels out of range, inconsistent ``same_set``.
        TypeError: Non-integer labels.

    Example:
        >>> S = np.array([[1.0, 0.5, -1.0], [0.5, 1.0, -0.5], [-1.0, -0.5, 1.0]])
        >>> m, c = class_stiffness(S, [0, 0, 1], [0, 0, 1], 2, same_set=True)
        >>> m.tolist(), c.tolist()
        ([[0.5, -0.75], [-0.75, nan]], [[2, 2], [2, 0]])
    """
    sums, counts = _class_sums(S, labels_a, labels_b, n_classes, same_set)
    matrix = np.full(sums.shape, np.nan)
    np.divide(sums, counts, out=matrix, where=counts > 0)
    return matrix, counts


def within_between(matrix) -> Tuple[float, float]:
    """Within-class (nanmean of the diagonal) and between-class (nanmean off the diagonal) stiffness.

    NaN when there is no finite entry to average; no warning is issued.

    Example:
        >>> within_between(np.array([[1.0, -1.0], [0.0, np.nan]]))
        (1.0, -0.5)
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(
            f"Received: class matrix with shape {m.shape}; expected (C, C); fix: pass class_stiffness output."
        )
    on_diag = np.eye(m.shape[0], dtype=bool)

    def _nanmean(values: np.ndarray) -> float:
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else float("nan")

    return _nanmean(m[on_diag]), _nanmean(m[~on_diag])


def pair_set_blocks(is_val) -> Dict[str, Tuple[np.ndarray, np.ndarray, bool]]:
    """Index blocks of the pair sets: name -> ``(row_index, col_index, same_set)``.

    ``"train-train"`` is always present; ``"train-val"`` and ``"val-val"`` only when some probe is
    held out. Probes may come in any order.

    Example:
        >>> blocks = pair_set_blocks(np.array([False, True, False]))
        >>> list(blocks), blocks["train-val"][0].tolist(), blocks["train-val"][1].tolist()
        (['train-train', 'train-val', 'val-val'], [0, 2], [1])
    """
    mask = np.asarray(is_val)
    if mask.dtype != bool or mask.ndim != 1:
        raise TypeError(
            f"Received: is_val of dtype {mask.dtype} and shape {mask.shape}; expected a 1-D boolean "
            f"array (True = held-out probe); fix: pass np.asarray(is_val, dtype=bool)."
        )
    train, val = np.flatnonzero(~mask), np.flatnonzero(mask)
    blocks = {"train-train": (train, train, True)}
    if val.size:
        blocks["train-val"] = (train, val, False)
        blocks["val-val"] = (val, val, True)
    return blocks


def sub_block(S: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``S[rows][:, cols]`` without a copy when both index all of ``S`` in order.

    Example:
        >>> S = np.arange(9.0).reshape(3, 3)
        >>> sub_block(S, np.arange(3), np.arange(3)) is S, sub_block(S, np.array([0]), np.array([2])).tolist()
        (True, [[2.0]])
    """
    n = S.shape[0]
    full = np.arange(n)
    if rows.size == n and cols.size == n and np.array_equal(rows, full) and np.array_equal(cols, full):
        return S
    return S[np.ix_(rows, cols)]
