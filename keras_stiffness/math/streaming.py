"""Gram blocks of probe ranges -> the :class:`~keras_stiffness.math.record.Measurement` of ``summarize``. NumPy only.

At large ``N`` the ``(N, N)`` Gram matrix must never exist. The engine delivers it as blocks ``(I, J)`` of
probe ranges from the upper block triangle: diagonal blocks ``(I, I)`` and off-diagonal blocks with
``I.stop <= J.start``, whose mirror ``(J, I)`` is implied (the matrix is symmetric). The diagonal
(squared gradient norms) is known before any block arrives. :class:`StreamingSummary` folds the blocks, in
any order, into sums: class sums per directed class pair, distance-bin sums and counts, the moment sums of
the fitted critical length. Its :meth:`~StreamingSummary.result` equals :func:`summarize` on the whole
matrices, up to float rounding (the sums are taken in another order).

Several workers may each add a disjoint share of the blocks: their :meth:`~StreamingSummary.state` arrays
(fixed shapes, known from the constructor) combine entry by entry with the reduction named in
:attr:`StreamingSummary.REDUCE_OPS` (an all-reduce), and :meth:`~StreamingSummary.load_state` of the
combined state gives every worker the single-process result.

Axis letters are those of :mod:`keras_stiffness.math.record`, plus, in the state:

- ``G``: Gram matrices, the total first, then the ``L`` layers;
- ``Q``: all three pair sets of :data:`~keras_stiffness.math.record.PAIR_SETS`, present or not;
- ``K``: class groups: ``C``, or 1 without classes (regression: all probes in one group).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from keras_stiffness.math.distance import (
    bin_indices,
    check_edges,
    check_metric,
    critical_length,
    default_edges,
    fit_from_moments,
    fit_moments,
    mean_or_nan,
)
from keras_stiffness.math.record import MEASURES, PAIR_SETS, Measurement
from keras_stiffness.math.stiffness import (
    SIGN_RTOL,
    ZERO_NORM_RTOL,
    check_measures,
    pair_set_blocks,
    probe_labels,
    within_between,
)
from keras_stiffness.math.summarize import summarize
from keras_stiffness.validation import check_finite_entries, check_int, check_names, is_int

FIT_MOMENTS = ("sum_d", "sum_s", "sum_dd", "sum_ds")


def _diagonal(values, name: str, n: Optional[int] = None) -> np.ndarray:
    d = np.asarray(values, dtype=np.float64)
    if d.ndim != 1 or (n is not None and d.size != n) or not np.isfinite(d).all():
        expected = "(N,)" if n is None else f"({n},)"
        raise ValueError(
            f"Received: {name} with shape {d.shape} (finite: {bool(np.isfinite(d).all())}); expected finite "
            f"{expected} squared gradient norms, the Gram diagonal; fix: pass np.diagonal of that Gram matrix."
        )
    return d


def gram_inverse_norms(diag) -> np.ndarray:
    """``1 / sqrt(G[i, i])`` per probe, 0 for zero-norm probes (the rule of ``zero_norm_mask``, on the diagonal).

    Args:
        diag: ``(N,)`` Gram diagonal (squared gradient norms).

    Returns:
        float64 ``(N,)``; an entry is 0 exactly when the probe is zero-norm.

    Example:
        >>> gram_inverse_norms([4.0, 0.0, 1e-40]).tolist()
        [0.5, 0.0, 0.0]
    """
    d = _diagonal(diag, "diag")
    zero = d <= ZERO_NORM_RTOL * (max(float(d.max()), 0.0) if d.size else 0.0)
    inv = np.zeros(d.size)
    inv[~zero] = 1.0 / np.sqrt(d[~zero])
    return inv


def block_stiffness(
    gram_block, inv_rows, inv_cols, measures: Sequence[str] = MEASURES, *, diagonal: bool = False
) -> Dict[str, np.ndarray]:
    """Stiffness of one Gram block, entry for entry as ``stiffness_matrices`` gives it on the whole matrix.

    Args:
        gram_block: ``(Na, Nb)`` block ``G[I, J]``.
        inv_rows: ``(Na,)`` :func:`gram_inverse_norms` of the rows' probes (0: zero-norm).
        inv_cols: ``(Nb,)`` the same for the columns' probes.
        measures: Subset of ("sign", "cos").
        diagonal: The block is ``(I, I)``: its diagonal (self-pairs, never averaged) is set to 0.

    Returns:
        ``{measure: (Na, Nb) float64}``; rows and columns of zero-norm probes are 0.

    Example:
        >>> g = np.array([[4.0, -2.0], [-2.0, 9.0]])
        >>> inv = gram_inverse_norms(np.diagonal(g))
        >>> s = block_stiffness(g, inv, inv, diagonal=True)
        >>> s["sign"].tolist(), np.round(s["cos"], 3).tolist()
        ([[0.0, -1.0], [-1.0, 0.0]], [[0.0, -0.333], [-0.333, 0.0]])
    """
    measures = check_measures(measures)
    with np.errstate(over="ignore", invalid="ignore"):
        cos = np.asarray(gram_block, dtype=np.float64) * inv_rows[:, None]
        cos *= inv_cols[None, :]
    zero_rows, zero_cols = inv_rows == 0, inv_cols == 0
    if zero_rows.any():
        cos[zero_rows] = 0.0
    if zero_cols.any():
        cos[:, zero_cols] = 0.0
    np.clip(cos, -1.0, 1.0, out=cos)
    if diagonal:
        np.fill_diagonal(cos, 0.0)
    out = {}
    if "sign" in measures:
        sign = (cos > SIGN_RTOL).astype(np.float64)  # |cos| <= SIGN_RTOL: rounding noise, sign 0
        sign -= cos < -SIGN_RTOL
        out["sign"] = sign
    if "cos" in measures:
        out["cos"] = cos
    return out


class StreamingSummary:
    """Accumulates Gram blocks into the :class:`Measurement` that :func:`summarize` gives on whole matrices.

    Args:
        labels: ``(N,)`` integer classes of the probes (ignored when ``n_classes`` is 0).
        is_val: ``(N,)`` boolean, True for held-out probes (any order).
        n_classes: Number of classes ``C``; 0 for regression (see :func:`summarize`).
        norms: ``(N,)`` Gram diagonal (squared gradient norms) of the total.
        layer_norms: Layer name -> ``(N,)`` diagonal of that layer's Gram, in forward order (the order of
            ``Measurement.layers``); every :meth:`add` then brings a block of each.
        spaces: Representation-space names (``"input"`` first); every :meth:`add` then brings a distance
            block of each.
        edges: Space -> ``(bins + 1,)`` bin edges. Required for ``metric="euclidean"``: the edges of
            :func:`summarize` are ``distance_edges_from_max(max, "euclidean", bins)`` with ``max`` the largest
            ``block_max_distance`` over the blocks' train-train pairs (a first pass over the distances;
            compute each distance block the same way in both passes, so that the largest pair lands in the
            last bin rather than a rounding error beyond it). Cosine: ``default_edges(None, "cosine", bins)``
            unless given.
        measures: Subset of ("sign", "cos").
        metric: Distance metric of the distance blocks, "cosine" or "euclidean".
        bins: Number of distance bins ``B``.
        min_count: As in :func:`summarize`.

    Raises:
        ValueError: Inconsistent shapes, non-finite norms, bad measures/metric/bins/spaces/edges.
        TypeError: Non-integer labels or non-boolean ``is_val``.

    Example:
        >>> from keras_stiffness.math.distance import block_distance
        >>> g = np.array([[1.0, 0.0], [0.9, 0.1], [-0.2, 1.0], [-0.3, 0.9]])
        >>> gram, labels, is_val = g @ g.T, np.array([0, 0, 1, 1]), np.array([False, True, False, False])
        >>> acc = StreamingSummary(labels, is_val, 2, np.diagonal(gram), spaces=("input",), bins=4)
        >>> for rows, cols in [(slice(2, 4), slice(2, 4)), (slice(0, 2), slice(2, 4)), (slice(0, 2), slice(0, 2))]:
        ...     d = block_distance(g[rows], None if rows == cols else g[cols])
        ...     acc.add(rows, cols, gram[rows, cols], distances={"input": d})
        >>> m = acc.result(tags={"step": 5})
        >>> ref = summarize(gram, None, labels, is_val, 2, {"input": g}, bins=4, tags={"step": 5})
        >>> m.step, m.scalar("within", measure="sign"), m.curve_count.tolist() == ref.curve_count.tolist()
        (5, 1.0, True)
        >>> np.allclose(m.class_matrix, ref.class_matrix, equal_nan=True), m.gram is None
        (True, True)
    """

    #: How two partial states combine, entry by entry: state key -> "sum" or "max".
    REDUCE_OPS: ClassVar[Dict[str, str]] = {
        "class_sums": "sum",  # (G, Q, M, K, K) stiffness sums per directed class pair, self-pairs left out
        "curve_sums": "sum",  # (R, M, B) stiffness sums of train-train pairs i < j per distance bin
        "curve_counts": "sum",  # (R, B) pairs per bin
        "fit_counts": "sum",  # (R,) within-class train-train pairs i < j
        "fit_moments": "sum",  # (R, M, 4) their FIT_MOMENTS sums
        "fit_max": "max",  # (R,) their largest distance (-inf: none yet)
        "pairs_seen_by_row": "sum",  # (N,) entries (i, j >= i) added, per row i: N - i when complete
        "pairs_seen_by_col": "sum",  # (N,) entries (i <= j, j) added, per column j: j + 1 when complete
    }

    def __init__(
        self,
        labels,
        is_val,
        n_classes: int,
        norms,
        layer_norms: Optional[Mapping[str, np.ndarray]] = None,
        *,
        spaces: Sequence[str] = (),
        edges: Optional[Mapping[str, np.ndarray]] = None,
        measures: Sequence[str] = ("sign", "cos"),
        metric: str = "cosine",
        bins: int = 20,
        min_count: int = 10,
    ) -> None:
        self._measures = check_measures(measures)
        self._metric = check_metric(metric)
        self._bins = check_int(bins, "bins")
        self._min_count = check_int(min_count, "min_count", minimum=0, fix="Pass e.g. 10.")
        total = _diagonal(norms, "norms")
        n = self._n = total.size
        self._n_classes = check_int(n_classes, "n_classes", minimum=0)
        if self._n_classes:
            self._labels = probe_labels(labels, n, self._n_classes)
        elif np.shape(labels) != (n,):
            raise ValueError(
                f"Received: labels with shape {np.shape(labels)}; expected ({n},), one per probe (ignored "
                f"without classes)."
            )
        else:
            self._labels = np.zeros(n, np.int64)  # one group: sums over all pairs
        self._groups = max(self._n_classes, 1)
        blocks = pair_set_blocks(is_val)
        if np.asarray(is_val).shape != (n,):
            raise ValueError(
                f"Received: is_val with shape {np.shape(is_val)}; expected ({n},) like norms; fix: pass one "
                f"flag per probe."
            )
        self._val = np.asarray(is_val)
        self._pair_sets = tuple(name for name in PAIR_SETS if name in blocks)
        layer_norms = dict(layer_norms or {})
        self._layer_names = check_names(tuple(layer_norms), "layer_norms")
        self._inv = [gram_inverse_norms(total)] + [
            gram_inverse_norms(_diagonal(d, f"layer_norms[{name!r}]", n)) for name, d in layer_norms.items()
        ]
        self._spaces = check_names(spaces, "spaces")
        if len(set(self._spaces)) != len(self._spaces):
            raise ValueError(f"Received: spaces={self._spaces!r}; expected distinct names; fix: drop duplicates.")
        self._edges = self._space_edges(dict(edges or {}))
        self._state = self._empty_state()

    def _space_edges(self, edges: Dict[str, np.ndarray]) -> List[np.ndarray]:
        unknown = sorted(set(edges) - set(self._spaces))
        missing = [s for s in self._spaces if s not in edges] if self._metric == "euclidean" else []
        if unknown or missing:
            raise ValueError(
                f"Received: edges for {sorted(edges)} (unknown: {unknown}, missing: {missing}) with "
                f"spaces={self._spaces!r}, metric={self._metric!r}; expected edges for spaces only, and for every "
                f"space with the euclidean metric; fix: pass distance_edges_from_max(largest train-train "
                f"block_max_distance, 'euclidean', bins) per space."
            )
        out = []
        for space in self._spaces:
            e = check_edges(edges[space]) if space in edges else default_edges(None, "cosine", self._bins)
            if e.size != self._bins + 1:
                raise ValueError(
                    f"Received: edges[{space!r}] with {e.size} values; expected bins + 1 = {self._bins + 1}; "
                    f"fix: pass edges made with the same bins."
                )
            out.append(e)
        return out

    def _empty_state(self) -> Dict[str, np.ndarray]:
        g_, m_, k_, r_, b_ = (
            1 + len(self._layer_names),
            len(self._measures),
            self._groups,
            len(self._spaces),
            self._bins,
        )
        return {
            "class_sums": np.zeros((g_, len(PAIR_SETS), m_, k_, k_)),
            "curve_sums": np.zeros((r_, m_, b_)),
            "curve_counts": np.zeros((r_, b_), np.int64),
            "fit_counts": np.zeros(r_, np.int64),
            "fit_moments": np.zeros((r_, m_, len(FIT_MOMENTS))),
            "fit_max": np.full(r_, -np.inf),
            "pairs_seen_by_row": np.zeros(self._n, np.int64),
            "pairs_seen_by_col": np.zeros(self._n, np.int64),
        }

    @property
    def layers(self) -> Tuple[str, ...]:
        """Layer names, in the order of ``layer_norms``."""
        return self._layer_names

    @property
    def pair_sets(self) -> Tuple[str, ...]:
        """The pair sets the probes have, in :data:`~keras_stiffness.math.record.PAIR_SETS` order."""
        return self._pair_sets

    @property
    def spaces(self) -> Tuple[str, ...]:
        """Representation-space names, in the order given."""
        return self._spaces

    # ------------------------------------------------------------------------------------------------
    # Adding blocks
    # ------------------------------------------------------------------------------------------------
    def _span(self, s, name: str) -> Tuple[int, int]:
        start = 0 if not isinstance(s, slice) or s.start is None else s.start
        stop = self._n if not isinstance(s, slice) or s.stop is None else s.stop
        ok = isinstance(s, slice) and s.step in (None, 1) and is_int(start) and is_int(stop)
        if not (ok and 0 <= start < stop <= self._n):
            raise ValueError(
                f"Received: {name}={s!r}; expected a non-empty slice(start, stop) of probes with step 1 and "
                f"0 <= start < stop <= {self._n}; fix: pass the probe range of the block."
            )
        return int(start), int(stop)

    @staticmethod
    def _block(values, name: str, shape: Tuple[int, int], where: str) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(
                f"Received: {name} with shape {arr.shape} for the block {where}; expected {shape}; fix: pass "
                f"the block of those rows and columns."
            )
        check_finite_entries(
            arr, f"{name} of the block {where}", "check the model's loss and gradients (or activations) for NaN/inf."
        )
        return arr

    @staticmethod
    def _keyed(blocks, names: Tuple[str, ...], name: str, declared: str) -> Dict[str, np.ndarray]:
        blocks = dict(blocks or {})
        if set(blocks) != set(names):
            raise ValueError(
                f"Received: {name} for {sorted(blocks)}; expected one block for each of {list(names)}, as "
                f"declared by {declared} in the constructor; fix: pass a block for every one of them."
            )
        return blocks

    def _coverage(self, r0: int, r1: int, c0: int, c1: int, diagonal: bool, where: str):
        """Entries the block adds per row and per column; raises when some were already added."""
        rows, cols = np.arange(r0, r1), np.arange(c0, c1)
        row_add = r1 - rows if diagonal else np.full(rows.size, c1 - c0)
        col_add = cols - r0 + 1 if diagonal else np.full(cols.size, r1 - r0)
        st = self._state
        if np.any(st["pairs_seen_by_row"][r0:r1] + row_add > self._n - rows) or np.any(
            st["pairs_seen_by_col"][c0:c1] + col_add > cols + 1
        ):
            raise ValueError(
                f"Received: the block {where}, overlapping blocks already added; expected each entry of the upper "
                f"block triangle once; fix: add every block (I, J), I <= J, exactly once (with several "
                f"accumulators, give each a disjoint share)."
            )
        return row_add, col_add

    def _onehots(self, a0: int, a1: int) -> np.ndarray:
        """``(n, 2K)`` one-hot class groups of probes a0..a1: training probes in the first K columns, held-out
        probes in the last K."""
        cols = self._labels[a0:a1] + self._groups * self._val[a0:a1]
        out = np.zeros((a1 - a0, 2 * self._groups))
        out[np.arange(a1 - a0), cols] = 1.0
        return out

    def add(
        self,
        rows: slice,
        cols: slice,
        total,
        per_layer: Optional[Mapping[str, np.ndarray]] = None,
        distances: Optional[Mapping[str, np.ndarray]] = None,
    ) -> None:
        """Fold in one Gram block ``(I, J) = (rows, cols)``, with its layer and distance blocks.

        Args:
            rows: Probe range ``I``.
            cols: Probe range ``J``: ``cols == rows`` (a diagonal block, whole: both triangles are read) or
                ``rows.stop <= cols.start`` (its mirror ``(J, I)`` is implied, never sent).
            total: ``(len(I), len(J))`` block of the total Gram matrix.
            per_layer: Layer name -> block of that layer's Gram, for every layer of ``layer_norms``.
            distances: Space -> ``(len(I), len(J))`` distances between the probes of ``I`` and ``J``, in the
                summary's metric, for every space of ``spaces`` (only train-train pairs ``i < j`` are read).

        Raises:
            ValueError: A range outside the probes or below the block diagonal, a block of the wrong shape or
                with a non-finite entry, missing or unknown layers/spaces, or a block overlapping blocks
                already added. Nothing is added then.
        """
        r0, r1 = self._span(rows, "rows")
        c0, c1 = self._span(cols, "cols")
        diagonal = (r0, r1) == (c0, c1)
        where = f"rows={r0}:{r1}, cols={c0}:{c1}"
        if not diagonal and r1 > c0:
            raise ValueError(
                f"Received: the block {where}; expected a block of the upper block triangle: cols == rows, or "
                f"rows.stop <= cols.start; fix: send the block (J, I) as (I, J), transposed, and use the same "
                f"probe ranges on both axes."
            )
        shape = (r1 - r0, c1 - c0)
        grams = [self._block(total, "total", shape, where)]
        per_layer = self._keyed(per_layer, self._layer_names, "per_layer", "layer_norms")
        grams += [self._block(per_layer[k], f"per_layer[{k!r}]", shape, where) for k in self._layer_names]
        distances = self._keyed(distances, self._spaces, "distances", "spaces")
        dists = [self._block(distances[k], f"distances[{k!r}]", shape, where) for k in self._spaces]
        row_add, col_add = self._coverage(r0, r1, c0, c1, diagonal, where)

        left, right = self._onehots(r0, r1), self._onehots(c0, c1)
        for g, block in enumerate(grams):
            inv = self._inv[g]
            mats = block_stiffness(block, inv[r0:r1], inv[c0:c1], self._measures, diagonal=diagonal)
            for k, measure in enumerate(self._measures):
                # einsum for the small (2K, n) x (n, 2K) product: threaded BLAS takes ~70 ms on this shape
                self._add_class_sums(g, k, np.einsum("ia,ib->ab", left, mats[measure] @ right), diagonal)
            if g == 0 and dists:
                self._add_curves(mats, dists, (r0, r1, c0, c1), diagonal)
        self._state["pairs_seen_by_row"][r0:r1] += row_add
        self._state["pairs_seen_by_col"][c0:c1] += col_add

    def _add_class_sums(self, g: int, k: int, q: np.ndarray, diagonal: bool) -> None:
        """Add ``q = left.T @ S @ right``, ``(2K, 2K)`` sums over (row group, column group), to the pair sets."""
        c = self._groups
        tt, tv, vt, vv = q[:c, :c], q[:c, c:], q[c:, :c], q[c:, c:]
        if not diagonal:  # the mirrored entries (j, i): train-val also gets its val-row, train-column part
            tt, tv, vv = tt + tt.T, tv + vt.T, vv + vv.T
        sums = self._state["class_sums"][g, :, k]  # (Q, K, K) view
        sums[0] += tt
        sums[1] += tv
        sums[2] += vv

    def _add_curves(self, mats: Dict[str, np.ndarray], dists: List[np.ndarray], span, diagonal: bool) -> None:
        """Bin the block's train-train pairs ``i < j`` per space; moment sums of the within-class ones."""
        r0, r1, c0, c1 = span
        pairs = ~self._val[r0:r1, None] & ~self._val[None, c0:c1]
        if diagonal:
            pairs = np.triu(pairs, 1)
        if not pairs.any():
            return
        every = pairs.all()  # an off-diagonal block of training probes only: no gather, flat views

        def flat(a: np.ndarray) -> np.ndarray:
            return a.reshape(-1) if every else a[pairs]

        values = [flat(mats[m]) for m in self._measures]
        same = None
        if self._n_classes:
            same = flat(self._labels[r0:r1, None] == self._labels[None, c0:c1])
        st = self._state
        for r, d in enumerate(dists):
            dv = flat(d)
            k, inside = bin_indices(dv, self._edges[r])
            st["curve_counts"][r] += np.bincount(k, minlength=self._bins)
            for m, sv in enumerate(values):
                st["curve_sums"][r, m] += np.bincount(k, weights=sv[inside], minlength=self._bins)
            if same is not None and same.any():
                dw = dv[same]
                st["fit_counts"][r] += dw.size
                st["fit_max"][r] = max(st["fit_max"][r], float(dw.max()))
                for m, sv in enumerate(values):
                    st["fit_moments"][r, m] += fit_moments(dw, sv[same])

    # ------------------------------------------------------------------------------------------------
    # State: what several accumulators combine
    # ------------------------------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """Every accumulator, a copy: float64/int64 arrays of fixed shapes (see :attr:`REDUCE_OPS`).

        Example:
            >>> acc = StreamingSummary(np.array([0, 1]), np.zeros(2, bool), 2, np.ones(2))
            >>> sorted(acc.state()) == sorted(StreamingSummary.REDUCE_OPS), acc.state()["class_sums"].shape
            (True, (1, 3, 2, 2, 2))
        """
        return {key: value.copy() for key, value in self._state.items()}

    def _checked_state(self, state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if set(state) != set(self.REDUCE_OPS):
            raise ValueError(
                f"Received: a state with keys {sorted(state)}; expected {sorted(self.REDUCE_OPS)}; fix: pass "
                f"what state() returns (combined over accumulators)."
            )
        out = {}
        for key, ref in self._state.items():
            arr = np.asarray(state[key])
            if arr.shape != ref.shape or arr.dtype.kind != ref.dtype.kind:
                raise ValueError(
                    f"Received: state[{key!r}] with shape {arr.shape} and dtype {arr.dtype}; expected shape "
                    f"{ref.shape} and dtype {ref.dtype}; fix: combine states of accumulators built with the same "
                    f"arguments."
                )
            out[key] = arr.astype(ref.dtype, copy=True)
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the accumulators by ``state``, e.g. the all-reduced states of several accumulators.

        Raises:
            ValueError: Missing or unknown keys, wrong shapes or dtypes.
        """
        self._state = self._checked_state(state)

    def merge_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Combine ``state`` (another accumulator's, of disjoint blocks) into this one, per :attr:`REDUCE_OPS`.

        Raises:
            ValueError: Missing or unknown keys, wrong shapes or dtypes.
        """
        other = self._checked_state(state)
        for key, op in self.REDUCE_OPS.items():
            (np.add if op == "sum" else np.maximum)(self._state[key], other[key], out=self._state[key])

    # ------------------------------------------------------------------------------------------------
    # The result
    # ------------------------------------------------------------------------------------------------
    def _check_coverage(self) -> None:
        by_row, by_col = self._state["pairs_seen_by_row"], self._state["pairs_seen_by_col"]
        idx = np.arange(self._n)
        bad_rows, bad_cols = np.flatnonzero(by_row != self._n - idx), np.flatnonzero(by_col != idx + 1)
        if bad_rows.size or bad_cols.size:
            i = int(bad_rows[0]) if bad_rows.size else int(bad_cols[0])
            seen, wanted = (by_row[i], self._n - i) if bad_rows.size else (by_col[i], i + 1)
            axis = "row" if bad_rows.size else "column"
            raise ValueError(
                f"Received: blocks covering {int(by_row.sum())} of the {self._n * (self._n + 1) // 2} entries of "
                f"the upper block triangle ({axis} {i}: {int(seen)} of its {wanted}); expected every block "
                f"(I, J), I <= J, added exactly once; fix: add the missing blocks (with several accumulators, "
                f"load_state() the states of all of them combined)."
            )

    def _class_pairs(self) -> np.ndarray:
        """``(Q, K, K)`` ordered pairs per directed class-group pair, self-pairs excluded (from the labels)."""
        n_train = np.bincount(self._labels[~self._val], minlength=self._groups)
        n_val = np.bincount(self._labels[self._val], minlength=self._groups)
        return np.stack(
            [
                np.outer(n_train, n_train) - np.diag(n_train),
                np.outer(n_train, n_val),
                np.outer(n_val, n_val) - np.diag(n_val),
            ]
        ).astype(np.int64)

    def _tables(self, g: int, present: List[int], counts: np.ndarray) -> Dict[str, np.ndarray]:
        """Class matrix, within, between and mean of Gram matrix ``g`` for the present pair sets."""
        sums = self._state["class_sums"][g][present]  # (P, M, K, K)
        p_, m_ = sums.shape[:2]
        out = {"mean": mean_or_nan(sums.sum(axis=(2, 3)), counts.sum(axis=(1, 2))[:, None])}
        if not self._n_classes:
            out["class_matrix"] = np.full((p_, m_, 0, 0), np.nan)
            out["within"], out["between"] = np.full((p_, m_), np.nan), np.full((p_, m_), np.nan)
            return out
        out["class_matrix"] = mean_or_nan(sums, counts[:, None])
        wb = np.array([[within_between(matrix) for matrix in per_measure] for per_measure in out["class_matrix"]])
        out["within"], out["between"] = wb[..., 0].reshape(p_, m_), wb[..., 1].reshape(p_, m_)
        return out

    def _curve_fields(self) -> Dict[str, object]:
        st, r_, m_ = self._state, len(self._spaces), len(self._measures)
        count = st["curve_counts"].copy()
        mean = mean_or_nan(st["curve_sums"], count[:, None, :])
        crit, fit = np.full((r_, m_), np.nan), np.full((r_, m_), np.nan)
        for r, e in enumerate(self._edges):
            centers = 0.5 * (e[:-1] + e[1:])
            for k in range(m_):
                crit[r, k] = critical_length(centers, mean[r, k], count[r], self._min_count)
                fit[r, k] = fit_from_moments(
                    st["fit_counts"][r], st["fit_moments"][r, k], st["fit_max"][r], max(self._min_count, 2)
                )
        return {
            "spaces": self._spaces,
            "distance_edges": np.array(self._edges, dtype=np.float64).reshape(r_, self._bins + 1),
            "curve_mean": mean,
            "curve_count": count,
            "critical_length": crit,
            "critical_length_fit": fit,
        }

    def result(self, tags: Optional[Mapping[str, object]] = None) -> Measurement:
        """The :class:`Measurement` of all blocks added (or loaded), ``gram`` None.

        Args:
            tags: As in :func:`summarize` (step, epoch, train_loss, ...).

        Raises:
            ValueError: Blocks missing (or, after :meth:`load_state`, counted twice); bad tags.
        """
        self._check_coverage()
        # The tag fields come from summarize itself, on an empty probe set: one place for the tag rules.
        empty = summarize(np.zeros((0, 0)), None, np.zeros(0, np.int64), np.zeros(0, bool), 0, tags=tags)
        present = [PAIR_SETS.index(name) for name in self._pair_sets]
        counts = self._class_pairs()[present]
        main, *layers = [self._tables(g, present, counts) for g in range(len(self._inv))]
        shape = (len(layers), len(present), len(self._measures))
        fields = {
            "pair_sets": self._pair_sets,
            "measures": self._measures,
            "class_matrix": main["class_matrix"],
            "class_pairs": counts if self._n_classes else np.zeros((len(present), 0, 0), np.int64),
            "within": main["within"],
            "between": main["between"],
            "mean": main["mean"],
            "pairs": counts.sum(axis=(1, 2)),
            "layers": self._layer_names,
            **{
                f"layer_{key}": np.array([t[key] for t in layers]).reshape(shape)
                for key in ("mean", "within", "between")
            },
            **self._curve_fields(),
            "zero_grad": int(np.count_nonzero(self._inv[0] == 0)),
            "gram": None,
        }
        return dataclasses.replace(empty, **fields)
