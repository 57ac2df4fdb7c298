"""Stiffness as a function of distance: pairwise distances, binned curves, critical length. NumPy only.

Distances between probes are measured on a representation ``R`` (the standardized input, or a layer's
output), flattened to ``(N, D)``:

- ``"cosine"``: ``d = 1 - cos(R_i, R_j)`` in [0, 2]. A zero vector has no direction: its distance to
  every other probe is 1 (cosine 0, the same convention as zero-norm gradients).
- ``"euclidean"``: ``d = ||R_i - R_j||``, from ``|a|^2 + |b|^2 - 2 a·b`` (so a distance carries an absolute
  error of up to about ``1e-8`` times the vectors' norms; nearly identical vectors may be ~1e-8 apart).

The diagonal (self-distance) is 0. Curves and fits use only pairs ``i < j`` (self-pairs excluded). All
pair loops run over row chunks, so memory stays at the ``(N, N)`` matrices plus small temporaries.

Blockwise pieces for :mod:`keras_stiffness.math.streaming` (no ``(N, N)`` matrix): :func:`block_distance`,
:func:`block_max_distance` with :func:`distance_edges_from_max`, :func:`bin_indices`, and the fit's
:func:`fit_moments` / :func:`fit_from_moments`, each the same step the whole-matrix functions use.
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


def _rows(R, name: str = "R") -> np.ndarray:
    """``R`` flattened to ``(N, D)`` (a view when possible), after checking it is a real array."""
    x = np.asarray(R)
    if x.ndim < 1 or x.dtype.kind not in "biuf":
        raise ValueError(
            f"Received: {name} with shape {x.shape} and dtype {x.dtype}; expected a real array (N, ...); "
            f"fix: pass one representation row per probe."
        )
    return x.reshape(x.shape[0], -1)


def _finite_rows(rows: np.ndarray, name: str, first: int) -> np.ndarray:
    """``rows`` as float64, refusing a non-finite value (rows numbered from ``first``)."""
    c = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(c).all():
        raise ValueError(
            f"Received: {name} with a non-finite value in rows {first}..{first + len(c) - 1}; expected finite "
            f"values; fix: check the model's activations."
        )
    return c


def _row_scale(sq: np.ndarray, metric: str, sq_max: float) -> np.ndarray:
    """Per-row factors: unit rows for cosine (0 for zero vectors, ``sq <= 1e-30 sq_max``), 1 for euclidean."""
    if metric != "cosine":
        return np.ones(sq.size)
    zero = sq <= 1e-30 * sq_max
    scale = np.zeros(sq.size)
    scale[~zero] = 1.0 / np.sqrt(sq[~zero])
    return scale


def _distance_block(
    a: np.ndarray, b: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray, metric: str, diagonal: bool
) -> np.ndarray:
    """Distances between scaled rows ``a`` and ``b`` (squared norms ``sq_a``, ``sq_b`` before scaling).

    ``diagonal``: ``a`` and ``b`` are the same probes; the block is made exactly symmetric, 0 on the diagonal.
    """
    prod = a @ b.T
    if metric == "cosine":
        prod = np.clip(1.0 - prod, 0.0, 2.0)
    else:
        prod = np.sqrt(np.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * prod, 0.0))
    if diagonal:
        low = np.tril_indices(len(a), -1)
        prod[low] = prod.T[low]
        np.fill_diagonal(prod, 0.0)
    return prod


def squared_norms(R) -> np.ndarray:
    """Squared norms of the rows of ``R`` (flattened to ``(N, D)``), float64 ``(N,)``, in row chunks.

    The cosine zero-vector threshold of :func:`block_distance` is ``1e-30`` times their maximum.

    Raises:
        ValueError: Scalar, non-real or non-finite ``R``.

    Example:
        >>> squared_norms(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [25.0, 0.0]
    """
    flat = _rows(R)
    rows = max(1, CHUNK_VALUES // max(flat.shape[1], 1))
    sq = np.zeros(flat.shape[0])
    for i0 in range(0, flat.shape[0], rows):
        a = _finite_rows(flat[i0 : i0 + rows], "R", i0)
        sq[i0 : i0 + len(a)] = np.einsum("nd,nd->n", a, a)
    return sq


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
    flat = _rows(R)
    n = flat.shape[0]
    # rows per chunk: both a chunk (rows, D) and an output block (rows, rows) stay within the budget
    rows = max(1, min(n, CHUNK_VALUES // max(flat.shape[1], 1), math.isqrt(CHUNK_VALUES)))
    starts = range(0, n, rows)

    def chunk(r0: int) -> np.ndarray:
        return _finite_rows(flat[r0 : r0 + rows], "R", r0)

    sq = squared_norms(flat)
    scale = _row_scale(sq, metric, sq.max() if n else 0.0)
    out = np.empty((n, n))
    for i0 in starts:
        a = chunk(i0) * scale[i0 : i0 + rows, None]
        i1 = i0 + len(a)
        for j0 in range(i0, n, rows):
            b = a if j0 == i0 else chunk(j0) * scale[j0 : j0 + rows, None]
            j1 = j0 + len(b)
            prod = _distance_block(a, b, sq[i0:i1], sq[j0:j1], metric, diagonal=j0 == i0)
            out[i0:i1, j0:j1] = prod
            out[j0:j1, i0:i1] = prod.T
    return out


def block_distance(ra, rb=None, metric: str = "cosine", *, sq_max: Optional[float] = None) -> np.ndarray:
    """Distances between the rows of two representation blocks, as :func:`pairwise_distance` computes them.

    Args:
        ra: ``(Na, ...)`` representations of the row probes.
        rb: ``(Nb, ...)`` representations of the column probes; None for a diagonal block (the column
            probes are the row probes): then the block is exactly symmetric with a zero diagonal.
        metric: ``"cosine"`` or ``"euclidean"``.
        sq_max: The largest squared row norm over the whole probe set the distances are taken on (see
            :func:`squared_norms`): a row with ``|r|^2 <= 1e-30 sq_max`` is a zero vector (cosine
            distance 1). None: the largest within ``ra`` and ``rb``, enough unless some row is tiny.

    Returns:
        float64 ``(Na, Nb)`` distances (per entry equal to :func:`pairwise_distance`'s up to rounding).

    Raises:
        ValueError: Unknown metric, bad shapes, non-finite values.

    Example:
        >>> r = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
        >>> block_distance(r[:1], r[1:]).tolist(), block_distance(r[1:], metric="euclidean").tolist()
        ([[1.0, 2.0]], [[0.0, 3.605551275463989], [3.605551275463989, 0.0]])
    """
    check_metric(metric)
    a = _finite_rows(_rows(ra, "ra"), "ra", 0)
    b = a if rb is None else _finite_rows(_rows(rb, "rb"), "rb", 0)
    if b.shape[1] != a.shape[1]:
        raise ValueError(
            f"Received: ra with {a.shape[1]} and rb with {b.shape[1]} values per row; expected the same "
            f"representation for both blocks; fix: pass rows of the same space."
        )
    sq_a = np.einsum("nd,nd->n", a, a)
    sq_b = sq_a if rb is None else np.einsum("nd,nd->n", b, b)
    if sq_max is None:
        sq_max = max(float(sq_a.max(initial=0.0)), float(sq_b.max(initial=0.0)))
    a_scaled = a * _row_scale(sq_a, metric, sq_max)[:, None]
    b_scaled = a_scaled if rb is None else b * _row_scale(sq_b, metric, sq_max)[:, None]
    return _distance_block(a_scaled, b_scaled, sq_a, sq_b, metric, diagonal=rb is None)


def block_max_distance(D, *, diagonal: bool = False, row_mask=None, col_mask=None) -> float:
    """The largest distance among the pairs ``i < j`` of a block (0.0 when there is none).

    For euclidean bin edges gathered blockwise: the maximum over the blocks of the train-train pairs
    (``row_mask``, ``col_mask`` = the blocks' training probes), then :func:`distance_edges_from_max`.

    Args:
        D: ``(Na, Nb)`` distances of a block (rows before columns in probe order).
        diagonal: The block is square with the same probes on both sides: only its upper triangle counts.
        row_mask: Optional boolean ``(Na,)``: rows to use.
        col_mask: Optional boolean ``(Nb,)``: columns to use.

    Example:
        >>> d = np.array([[0.0, 2.0, 1.0], [9.0, 0.0, 4.0], [1.0, 4.0, 0.0]])
        >>> train = np.array([True, False, True])
        >>> block_max_distance(d, diagonal=True), block_max_distance(d, diagonal=True, row_mask=train)
        (4.0, 1.0)
    """
    d = np.asarray(D, dtype=np.float64)
    if d.ndim != 2 or (diagonal and d.shape[0] != d.shape[1]):
        raise ValueError(
            f"Received: D with shape {d.shape} (diagonal={diagonal}); expected a 2-D block, square when "
            f"diagonal; fix: pass the distances of one block."
        )
    mask = None
    if row_mask is not None or col_mask is not None:
        rm = np.ones(d.shape[0], bool) if row_mask is None else np.asarray(row_mask, dtype=bool)
        cm = (rm if diagonal else np.ones(d.shape[1], bool)) if col_mask is None else np.asarray(col_mask, bool)
        mask = rm[:, None] & cm[None, :]
    if diagonal:
        return max((float(v.max()) for (v,) in _upper_pairs(d.shape[0], mask, d) if v.size), default=0.0)
    values = d if mask is None else d[mask]
    return float(values.max()) if values.size else 0.0


def distance_edges_from_max(max_distance: float, metric: str, bins: int) -> np.ndarray:
    """Bin edges as :func:`default_edges` makes them, from the largest pair distance.

    Cosine: 0 to 2 (``max_distance`` is not read). Euclidean: 0 to ``max_distance``, or to 1 when it is
    not positive (no pair, or all distances 0).

    Example:
        >>> distance_edges_from_max(3.0, "euclidean", 3).tolist()
        [0.0, 1.0, 2.0, 3.0]
        >>> distance_edges_from_max(0.0, "euclidean", 2).tolist()
        [0.0, 0.5, 1.0]
    """
    check_metric(metric)
    bins = check_int(bins, "bins")
    if metric == "cosine":
        return np.linspace(0.0, 2.0, bins + 1)
    hi = float(max_distance)
    if not math.isfinite(hi):
        raise ValueError(
            f"Received: max_distance={max_distance!r}; expected a finite distance; fix: pass the largest "
            f"distance of the pairs (block_max_distance), or 0.0 when there is none."
        )
    return np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)


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
    check_int(bins, "bins")
    hi = 0.0 if metric == "cosine" else block_max_distance(check_square(distances, "distances"), diagonal=True)
    return distance_edges_from_max(hi, metric, bins)


def check_edges(edges) -> np.ndarray:
    """``edges`` as float64 if they are at least 2 finite, strictly increasing values.

    Example:
        >>> check_edges([0, 1, 2]).tolist()
        [0.0, 1.0, 2.0]
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all() or np.any(np.diff(e) <= 0):
        raise ValueError(
            f"Received: edges={e!r}; expected at least 2 finite, strictly increasing values; "
            f"fix: use default_edges(distances, metric, bins)."
        )
    return e


def bin_indices(distances: np.ndarray, edges: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Bin of each distance, as :func:`binned_curve` bins them, for the distances inside the edges.

    Args:
        distances: 1-D distances.
        edges: Checked ``(B + 1,)`` increasing edges (see :func:`check_edges`).

    Returns:
        ``(bins, inside)``: int bin indices of the distances with ``inside`` True, and the boolean mask
        of the distances within ``[edges[0], edges[-1]]`` (``edges[-1]`` itself goes in the last bin).

    Example:
        >>> k, inside = bin_indices(np.array([0.0, 0.5, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]))
        >>> k.tolist(), inside.tolist()
        ([0, 0, 1], [True, True, True, False])
    """
    n_bins = edges.size - 1
    d = np.asarray(distances)
    width = (edges[-1] - edges[0]) / n_bins
    if np.all(np.abs(np.diff(edges) - width) <= 1e-9 * width):
        # Even edges (the default ones): the bin by arithmetic, except within rounding of an edge,
        # where the edges themselves decide (searchsorted(side="right") - 1, exactly as below).
        frac = (d - edges[0]) * (1.0 / width)
        k = np.floor(frac)
        near = np.abs(frac - np.rint(frac)) < 1e-6
        if near.any():
            k[near] = np.searchsorted(edges, d[near], side="right") - 1
        k = k.astype(np.intp)
    else:
        k = np.searchsorted(edges, d, side="right") - 1
    k[d == edges[-1]] = n_bins - 1
    inside = (k >= 0) & (k < n_bins)
    return k[inside], inside


def mean_or_nan(sums, counts) -> np.ndarray:
    """``sums / counts`` elementwise (broadcast), NaN where ``counts`` is 0.

    Example:
        >>> mean_or_nan(np.array([3.0, 0.0]), np.array([2, 0])).tolist()
        [1.5, nan]
    """
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts)
    out = np.full(np.broadcast_shapes(sums.shape, counts.shape), np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


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
    s, d, e = check_square(S, "S"), check_square(D, "D"), check_edges(edges)
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
        k, ok = bin_indices(dv, e)
        sums += np.bincount(k, weights=sv[ok], minlength=n_bins)
        counts += np.bincount(k, minlength=n_bins)
    return mean_or_nan(sums, counts), counts


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
    # One pass of float64 moment sums; the variance guard in fit_from_moments rejects near-constant distances.
    n, moments, max_d = 0, np.zeros(4), -np.inf
    for dv, sv in _upper_pairs(d.shape[0], mask, d, s):
        if dv.size:
            n += dv.size
            moments += fit_moments(dv, sv)
            max_d = max(max_d, float(dv.max()))
    return fit_from_moments(n, moments, max_d, min_pairs)


def fit_moments(distances: np.ndarray, stiffness: np.ndarray) -> np.ndarray:
    """Moment sums ``[Σd, Σs, Σd², Σds]`` (float64 ``(4,)``) of pairs, for :func:`fit_from_moments`.

    Sums of several groups of pairs add up (the pair count and the largest distance are kept beside).

    Example:
        >>> fit_moments(np.array([0.5, 1.0]), np.array([0.5, 0.0])).tolist()
        [1.5, 0.5, 1.25, 0.25]
    """
    d, s = np.asarray(distances, dtype=np.float64), np.asarray(stiffness, dtype=np.float64)
    return np.array([d.sum(), s.sum(), float(d @ d), float(d @ s)])


def fit_from_moments(n: int, moments, max_d: float, min_pairs: int = 10) -> float:
    """The zero of the least-squares line ``stiffness = a + b d`` from moment sums (see critical_length_fit).

    Args:
        n: Number of pairs.
        moments: ``[Σd, Σs, Σd², Σds]`` over those pairs (see :func:`fit_moments`).
        max_d: The largest distance among them.
        min_pairs: Fewest pairs (at least 2) for a fit.

    Returns:
        ``-a / b``, or NaN in the cases :func:`critical_length_fit` lists.

    Example:
        >>> d = np.array([0.5, 1.0, 1.5])
        >>> fit_from_moments(3, fit_moments(d, 1.0 - d), 1.5, min_pairs=2)
        1.0
    """
    check_int(min_pairs, "min_pairs", minimum=2, fix="Pass e.g. 10.")
    n = int(n)
    if n < min_pairs:
        return float("nan")
    sum_d, sum_s, sum_dd, sum_ds = (float(v) for v in moments)
    mean_d, mean_s = sum_d / n, sum_s / n
    sdd, sds = sum_dd - n * mean_d * mean_d, sum_ds - n * mean_d * mean_s
    if sdd <= 1e-12 * max(sum_dd, 1e-300):
        return float("nan")
    b = sds / sdd
    a = mean_s - b * mean_d
    if not (b < 0 and a > 0) or -a / b > max_d:
        return float("nan")
    return float(-a / b)
