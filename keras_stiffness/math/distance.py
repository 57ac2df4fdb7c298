"""Stiffness as a function of distance: pairwise distances, binned curves, critical length. NumPy only.

Distances between probes are measured on a representation ``R`` (the standardized input, or a layer's
output), flattened to ``(N, D)``:

- ``"cosine"``: ``d = 1 - cos(R_i, R_j)`` in [0, 2]. A zero vector has no direction: its distance to
  every other probe is 1 (cosine 0, the same convention as zero-norm gradients).
- ``"euclidean"``: ``d = ||R_i - R_j||``, from ``|a|^2 + |b|^2 - 2 a·b`` (so a distance carries an absolute
  error of up to about ``1e-8`` times the vectors' norms; nearly identical vectors may be ~1e-8 apart).

The diagonal (self-distance) is 0. Curves and fits use only pairs ``i < j`` (self-pairs excluded). All
pair loops run over row chunks, so memory stays at the ``(N, N)`` matrices plus small temporaries.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import numpy as np

from keras_stiffness.validation import CHUNK_VALUES, check_choice, check_int, check_square

METRICS = ("cosine", "euclidean")


def check_metric(metric: str) -> str:
    """``metric`` if it is one of :data:`METRICS`.

    Example:
        >>> check_metric("euclidean")
        'euclidean'
    """
    return check_choice(metric, "metric", METRICS)


def _upper_pairs(n: int, mask: Optional[np.ndarray], *mats: np.ndarray) -> Iterator[Tuple[np.ndarray, ...]]:
    """Yield, chunk by chunk of rows, the entries ``(i, j)`` with ``i < j`` (and ``mask``) of each matrix."""
    step = max(1, CHUNK_VALUES // max(n, 1))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        c0 = r0 + 1
        if c0 >= n:
            break
        sel = np.arange(c0, n)[None, :] > np.arange(r0, r1)[:, None]
        if mask is not None:
            sel &= mask[r0:r1, c0:]
        yield tuple(m[r0:r1, c0:][sel] for m in mats)


def pairwise_distance(R, metric: str = "cosine") -> np.ndarray:
    """Pairwise distances between the rows of ``R`` (flattened to ``(N, D)``), float64 ``(N, N)``.

    Args:
        R: ``(N, ...)`` representations of the probes, any real dtype.
        metric: ``"cosine"`` (``1 - cos``, in [0, 2]; zero vectors at distance 1) or ``"euclidean"``.

    Raises:
        ValueError: Unknown metric, scalar or non-finite ``R``.

    Example:
        >>> pairwise_distance(np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])).tolist()
        [[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]
        >>> pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]]), "euclidean").tolist()
        [[0.0, 5.0], [5.0, 0.0]]
    """
    check_metric(metric)
    x = np.asarray(R)
    if x.ndim < 1 or x.dtype.kind not in "biuf":
        raise ValueError(
            f"Received: R with shape {x.shape} and dtype {x.dtype}; expected a real array (N, ...); "
            f"fix: pass one representation row per probe."
        )
    n = x.shape[0]
    flat = x.reshape(n, -1)
    # rows per chunk: both a chunk (rows, D) and an output block (rows, rows) stay within the budget
    rows = max(1, min(n, CHUNK_VALUES // max(flat.shape[1], 1), math.isqrt(CHUNK_VALUES)))
    starts = range(0, n, rows)

    def chunk(r0: int) -> np.ndarray:
        c = np.asarray(flat[r0 : r0 + rows], dtype=np.float64)
        if not np.isfinite(c).all():
            raise ValueError(
                f"Received: R with a non-finite value in rows {r0}..{r0 + len(c) - 1}; expected finite "
                f"values; fix: check the model's activations."
            )
        return c

    sq = np.zeros(n)
    for i0 in starts:
        a = chunk(i0)
        sq[i0 : i0 + len(a)] = np.einsum("nd,nd->n", a, a)
    scale = np.ones(n)
    if metric == "cosine":  # unit rows; zero vectors stay 0 (cosine 0, distance 1)
        zero = sq <= 1e-30 * (sq.max() if n else 0.0)
        scale = np.zeros(n)
        scale[~zero] = 1.0 / np.sqrt(sq[~zero])
    out = np.empty((n, n))
    for i0 in starts:
        a = chunk(i0) * scale[i0 : i0 + rows, None]
        i1 = i0 + len(a)
        for j0 in range(i0, n, rows):
            b = a if j0 == i0 else chunk(j0) * scale[j0 : j0 + rows, None]
            j1 = j0 + len(b)
            prod = a @ b.T
            if metric == "cosine":
                prod = np.clip(1.0 - prod, 0.0, 2.0)
            else:
                prod = np.sqrt(np.maximum(sq[i0:i1, None] + sq[None, j0:j1] - 2.0 * prod, 0.0))
            if j0 == i0:  # make the diagonal block exactly symmetric
                low = np.tril_indices(len(a), -1)
                prod[low] = prod.T[low]
            out[i0:i1, j0:j1] = prod
            out[j0:j1, i0:i1] = prod.T
    np.fill_diagonal(out, 0.0)
    return out


def default_edges(distances, metric: str, bins: int) -> np.ndarray:
    """Bin edges for a distance curve: ``bins + 1`` evenly spaced values.

    Cosine: from 0 to 2 (the whole range; ``distances`` is not read and may be None). Euclidean: from
    0 to the largest distance among pairs ``i < j``; 1 when there is no pair or all distances are 0.

    Example:
        >>> default_edges(None, "cosine", 4).tolist()
        [0.0, 0.5, 1.0, 1.5, 2.0]
        >>> default_edges(np.array([[0.0, 3.0], [3.0, 0.0]]), "euclidean", 3).tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    check_metric(metric)
    bins = check_int(bins, "bins")
    if metric == "cosine":
        return np.linspace(0.0, 2.0, bins + 1)
    d = check_square(distances, "distances")
    hi = max((float(v.max()) for (v,) in _upper_pairs(d.shape[0], None, d) if v.size), default=0.0)
    return np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)


def _check_edges(edges) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all() or np.any(np.diff(e) <= 0):
        raise ValueError(
            f"Received: edges={e!r}; expected at least 2 finite, strictly increasing values; "
            f"fix: use default_edges(distances, metric, bins)."
        )
    return e


def binned_curve(S, D, edges, pair_mask=None) -> Tuple[np.ndarray, np.ndarray]:
    """Mean stiffness and pair count per distance bin, over pairs ``i < j``.

    Bin ``k`` holds ``edges[k] <= d < edges[k + 1]``; ``d == edges[-1]`` goes in the last bin; pairs
    outside ``[edges[0], edges[-1]]`` are left out.

    Args:
        S: ``(N, N)`` stiffness.
        D: ``(N, N)`` distances.
        edges: ``(B + 1,)`` increasing bin edges.
        pair_mask: Optional boolean ``(N, N)``: only pairs where it is True are used.

    Returns:
        ``(mean, count)``: float64 ``(B,)`` (NaN for an empty bin) and int64 ``(B,)``.

    Example:
        >>> S = np.array([[1.0, 0.5, -1.0], [0.5, 1.0, 0.0], [-1.0, 0.0, 1.0]])
        >>> D = np.array([[0.0, 0.2, 1.8], [0.2, 0.0, 1.9], [1.8, 1.9, 0.0]])
        >>> mean, count = binned_curve(S, D, [0.0, 1.0, 2.0])
        >>> mean.tolist(), count.tolist()
        ([0.5, -0.5], [1, 2])
    """
    s, d, e = check_square(S, "S"), check_square(D, "D"), _check_edges(edges)
    if s.shape != d.shape:
        raise ValueError(
            f"Received: S {s.shape} and D {d.shape}; expected the same shape; fix: compute both on the same probes."
        )
    mask = None
    if pair_mask is not None:
        mask = np.asarray(pair_mask)
        if mask.dtype != bool or mask.shape != s.shape:
            raise ValueError(
                f"Received: pair_mask of dtype {mask.dtype} and shape {mask.shape}; expected "
                f"bool {s.shape}; fix: pass a boolean (N, N) mask or None."
            )
    n_bins = e.size - 1
    sums, counts = np.zeros(n_bins), np.zeros(n_bins, dtype=np.int64)
    for sv, dv in _upper_pairs(s.shape[0], mask, s, d):
        k = np.searchsorted(e, dv, side="right") - 1
        k[dv == e[-1]] = n_bins - 1
        ok = (k >= 0) & (k < n_bins)
        sums += np.bincount(k[ok], weights=sv[ok], minlength=n_bins)
        counts += np.bincount(k[ok], minlength=n_bins)
    mean = np.full(n_bins, np.nan)
    np.divide(sums, counts, out=mean, where=counts > 0)
    return mean, counts


def critical_length(centers, mean, count, min_count: int) -> float:
    """First zero crossing of a binned stiffness curve, moving out from d = 0 (NaN when undefined).

    Only bins with ``count >= min_count`` and a finite mean are used; the others are skipped as
    missing. Between consecutive used bins the curve is linear in the bin centres. The reading "the
    distance below which pairs tend to have positive stiffness" needs a positive start, so the result
    is NaN when the first used bin is already <= 0, when no bin is used, and when the curve never
    reaches 0. A used bin exactly at 0 gives its centre.

    Example:
        >>> critical_length([0.25, 0.75, 1.25], [0.6, 0.2, -0.2], [50, 50, 50], min_count=10)
        1.0
        >>> critical_length([0.25, 0.75], [0.6, 0.2], [50, 50], min_count=10)
        nan
    """
    c, m = np.asarray(centers, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    k = np.asarray(count)
    if not (c.ndim == m.ndim == k.ndim == 1 and c.size == m.size == k.size):
        raise ValueError(
            f"Received: centers {c.shape}, mean {m.shape}, count {k.shape}; expected three "
            f"1-D arrays of the same length; fix: pass one value per bin."
        )
    if not np.isfinite(c).all() or np.any(np.diff(c) <= 0):
        raise ValueError(
            "Received: centers not finite and strictly increasing; expected bin centres in "
            "increasing order; fix: pass (edges[:-1] + edges[1:]) / 2."
        )
    check_int(min_count, "min_count", minimum=0, fix="Pass e.g. 10.")
    used = (k >= min_count) & np.isfinite(m)
    c, m = c[used], m[used]
    if m.size == 0 or m[0] <= 0:
        return float("nan")
    below = np.flatnonzero(m <= 0)
    if below.size == 0:
        return float("nan")
    j = int(below[0])
    return float(c[j] - m[j] * (c[j] - c[j - 1]) / (m[j] - m[j - 1]))


def critical_length_fit(D, S, same_class_mask, min_pairs: int = 10) -> float:
    """Zero of a least-squares line ``stiffness = a + b d`` over within-class pairs ``i < j`` (v3).

    Args:
        D: ``(N, N)`` distances.
        S: ``(N, N)`` stiffness.
        same_class_mask: Boolean ``(N, N)``, True where probes ``i`` and ``j`` share a class.
        min_pairs: Fewest pairs (at least 2) for a fit.

    Returns:
        ``-a / b`` when ``b < 0``, ``a > 0`` and the zero lies within the fitted pairs' distances; NaN
        otherwise (too few pairs, all distances equal, slope not negative, a line that starts at or
        below 0, or a zero beyond the largest distance observed: an extrapolation, not a measurement).

    Example:
        >>> d = np.array([[0.0, 0.5, 1.0], [0.5, 0.0, 1.5], [1.0, 1.5, 0.0]])
        >>> critical_length_fit(d, 1.0 - d, np.ones((3, 3), dtype=bool), min_pairs=2)
        1.0
    """
    d, s = check_square(D, "D"), check_square(S, "S")
    mask = np.asarray(same_class_mask)
    if d.shape != s.shape or mask.shape != d.shape or mask.dtype != bool:
        raise ValueError(
            f"Received: D {d.shape}, S {s.shape}, same_class_mask {mask.shape} ({mask.dtype}); "
            f"expected the same (N, N) shape and a boolean mask; fix: build the mask as "
            f"labels[:, None] == labels[None, :]."
        )
    check_int(min_pairs, "min_pairs", minimum=2, fix="Pass e.g. 10.")
    # One pass of float64 moment sums; the variance guard below rejects near-constant distances.
    n, sum_d, sum_s, sum_dd, sum_ds, max_d = 0, 0.0, 0.0, 0.0, 0.0, -np.inf
    for dv, sv in _upper_pairs(d.shape[0], mask, d, s):
        if dv.size:
            n += dv.size
            sum_d, sum_s = sum_d + dv.sum(), sum_s + sv.sum()
            sum_dd, sum_ds = sum_dd + float(dv @ dv), sum_ds + float(dv @ sv)
            max_d = max(max_d, float(dv.max()))
    if n < min_pairs:
        return float("nan")
    mean_d, mean_s = sum_d / n, sum_s / n
    sdd, sds = sum_dd - n * mean_d * mean_d, sum_ds - n * mean_d * mean_s
    if sdd <= 1e-12 * max(sum_dd, 1e-300):
        return float("nan")
    b = sds / sdd
    a = mean_s - b * mean_d
    if not (b < 0 and a > 0) or -a / b > max_d:
        return float("nan")
    return float(-a / b)
