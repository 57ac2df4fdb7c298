"""Gram matrices (+ representations) -> one :class:`~keras_stiffness.math.record.Measurement`. NumPy only.

Every stiffness matrix is computed once per (Gram matrix, measure) and reused for all pair sets, the
distance curves and the critical lengths. Axis letters ``P, M, C, L, R, B, N`` are those of
:mod:`keras_stiffness.math.record`.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from keras_stiffness.math.distance import (
    binned_curve,
    check_metric,
    critical_length,
    critical_length_fit,
    default_edges,
    pairwise_distance,
)
from keras_stiffness.math.record import PAIR_SETS, TAGS, Measurement
from keras_stiffness.math.stiffness import (
    check_measures,
    class_stiffness,
    pair_set_blocks,
    probe_labels,
    stiffness_matrices,
    sub_block,
    within_between,
)
from keras_stiffness.validation import check_int, check_square

Blocks = Dict[str, Tuple[np.ndarray, np.ndarray, bool]]


def _tags(tags: Optional[Mapping[str, object]]) -> Dict[str, float]:
    tags = dict(tags or {})
    unknown = sorted(set(tags) - set(TAGS))
    if unknown:
        raise ValueError(
            f"Received: tags with unknown keys {unknown}; expected keys among {TAGS}; fix: rename or drop them."
        )
    out = {k: (math.nan if tags.get(k) is None else float(tags[k])) for k in TAGS}
    step = tags.get("step")
    out["step"] = 0 if step is None else int(step)
    return out


def _pair_set_summaries(
    mats: Dict[str, np.ndarray], measures: Tuple[str, ...], labels: np.ndarray, blocks: Blocks, n_classes: int
) -> Dict[str, np.ndarray]:
    """Class matrices, pair counts, within, between and mean of one Gram matrix's stiffness."""
    p_, m_, c_ = len(blocks), len(measures), n_classes
    out = {
        "class_matrix": np.full((p_, m_, c_, c_), np.nan),
        "class_pairs": np.zeros((p_, c_, c_), np.int64),
        "within": np.full((p_, m_), np.nan),
        "between": np.full((p_, m_), np.nan),
        "mean": np.full((p_, m_), np.nan),
        "pairs": np.zeros(p_, np.int64),
    }
    for p, (rows, cols, same_set) in enumerate(blocks.values()):
        for k, measure in enumerate(measures):
            sub = sub_block(mats[measure], rows, cols)
            if c_ == 0:  # no classes: the mean over all pairs (self-pairs excluded), nothing else
                values = sub[~np.eye(len(rows), dtype=bool)] if same_set else sub.ravel()
                out["pairs"][p] = values.size
                if values.size:
                    out["mean"][p, k] = float(values.mean())
                continue
            matrix, counts = class_stiffness(sub, labels[rows], labels[cols], n_classes, same_set)
            out["class_matrix"][p, k], out["class_pairs"][p] = matrix, counts
            out["within"][p, k], out["between"][p, k] = within_between(matrix)
            has = counts > 0
            if has.any():
                out["mean"][p, k] = float(np.sum(matrix[has] * counts[has]) / counts.sum())
        if c_:
            out["pairs"][p] = out["class_pairs"][p].sum()
    return out


def summarize(
    total,
    per_layer: Optional[Mapping[str, np.ndarray]],
    labels,
    is_val,
    n_classes: int,
    representations: Optional[Mapping[str, np.ndarray]] = None,
    *,
    measures: Sequence[str] = ("sign", "cos"),
    metric: str = "cosine",
    bins: int = 20,
    min_count: int = 10,
    tags: Optional[Mapping[str, object]] = None,
    save_gram: bool = False,
) -> Measurement:
    """Summarize the Gram matrices of one probe set into a :class:`Measurement`.

    Args:
        total: ``(N, N)`` Gram matrix over all trainable weights.
        per_layer: Layer name -> ``(N, N)`` Gram block of that layer's weights, in forward order.
        labels: ``(N,)`` integer classes of the probes (ignored when ``n_classes`` is 0).
        is_val: ``(N,)`` boolean, True for held-out probes (any order).
        n_classes: Number of classes ``C``. 0 (regression, no classes): class matrices have ``C = 0``
            axes, ``within``/``between`` (and their per-layer tables) are NaN, ``critical_length_fit``
            (a within-class fit) is NaN; ``mean``, ``pairs``, per-layer ``mean``, the distance curves
            and ``critical_length`` are computed over all pairs as usual.
        representations: Space name -> ``(N, ...)`` representation (``"input"`` first, then layers).
            Distances use train-train pairs only. None or empty: no curves (``R = 0``).
        measures: Subset of ("sign", "cos"); stored in that order.
        metric: Distance metric, "cosine" or "euclidean".
        bins: Number of distance bins ``B``.
        min_count: Fewest pairs for a bin to count in the critical length (also the fewest
            within-class pairs for the fitted critical length, at least 2).
        tags: Any of step, epoch, train_loss, val_loss, learning_rate, wall_time (missing -> NaN,
            step -> 0).
        save_gram: Keep a float64 copy of ``total`` in ``Measurement.gram``.

    Returns:
        The filled :class:`Measurement`.

    Raises:
        ValueError: Inconsistent shapes, non-finite values, bad measures/metric/bins/tags.
        TypeError: Non-integer labels or non-boolean ``is_val``.

    Example:
        >>> g = np.array([[1.0, 0.0], [0.9, 0.1], [-0.2, 1.0], [-0.3, 0.9]])
        >>> m = summarize(g @ g.T, {"dense": g @ g.T}, np.array([0, 0, 1, 1]),
        ...               np.zeros(4, dtype=bool), 2, {"input": g}, bins=4, min_count=1)
        >>> m.scalar("within", measure="sign"), m.scalar("between", measure="sign")
        (1.0, -1.0)
        >>> m.class_matrix.shape, m.curve_mean.shape
        ((1, 2, 2, 2), (1, 2, 4))
        >>> r = summarize(g @ g.T, None, np.full(4, -1), np.zeros(4, dtype=bool), 0, {"input": g}, bins=4)
        >>> r.class_matrix.shape, math.isnan(r.scalar("within")), r.scalar("mean", measure="sign"), int(r.pairs[0])
        ((1, 2, 0, 0), True, -0.3333333333333333, 12)
    """
    measures = check_measures(measures)
    check_metric(metric)
    bins = check_int(bins, "bins")
    min_count = check_int(min_count, "min_count", minimum=0, fix="Pass e.g. 10.")
    tag_values = _tags(tags)
    gram = check_square(total, "total")
    n = gram.shape[0]
    n_classes = check_int(n_classes, "n_classes", minimum=0)
    if n_classes:
        labels = probe_labels(labels, n, n_classes)
    elif np.shape(labels) != (n,):
        raise ValueError(
            f"Received: labels with shape {np.shape(labels)}; expected ({n},), one per probe (ignored without classes)."
        )
    else:
        labels = np.full(n, -1, np.int64)
    blocks = pair_set_blocks(is_val)
    if np.asarray(is_val).shape != (n,):
        raise ValueError(
            f"Received: is_val with shape {np.shape(is_val)}; expected ({n},); fix: pass one flag per probe."
        )
    pair_sets = tuple(name for name in PAIR_SETS if name in blocks)

    mats, zero = stiffness_matrices(gram, measures)
    main = _pair_set_summaries(mats, measures, labels, blocks, n_classes)

    per_layer = dict(per_layer or {})
    layer_tables = {
        key: np.full((len(per_layer), len(pair_sets), len(measures)), np.nan) for key in ("mean", "within", "between")
    }
    for li, (name, layer_gram) in enumerate(per_layer.items()):
        lg = check_square(layer_gram, f"per_layer[{name!r}]")
        if lg.shape != gram.shape:
            raise ValueError(
                f"Received: per_layer[{name!r}] with shape {lg.shape}; expected {gram.shape} "
                f"like total; fix: pass blocks of the same probes."
            )
        summary = _pair_set_summaries(stiffness_matrices(lg, measures)[0], measures, labels, blocks, n_classes)
        for key, table in layer_tables.items():
            table[li] = summary[key]

    curves = _curves(
        mats,
        measures,
        labels,
        blocks["train-train"][0],
        representations,
        n,
        metric=metric,
        bins=bins,
        min_count=min_count,
    )
    return Measurement(
        step=tag_values["step"],
        epoch=tag_values["epoch"],
        train_loss=tag_values["train_loss"],
        val_loss=tag_values["val_loss"],
        learning_rate=tag_values["learning_rate"],
        wall_time=tag_values["wall_time"],
        probe_loss=tag_values["probe_loss"],
        probe_val_loss=tag_values["probe_val_loss"],
        pair_sets=pair_sets,
        measures=measures,
        class_matrix=main["class_matrix"],
        class_pairs=main["class_pairs"],
        within=main["within"],
        between=main["between"],
        mean=main["mean"],
        pairs=main["pairs"],
        layers=tuple(per_layer),
        layer_mean=layer_tables["mean"],
        layer_within=layer_tables["within"],
        layer_between=layer_tables["between"],
        **curves,
        zero_grad=int(zero.sum()),
        gram=np.array(gram, dtype=np.float64, copy=True) if save_gram else None,
    )


def _curves(
    mats: Dict[str, np.ndarray],
    measures: Tuple[str, ...],
    labels: np.ndarray,
    train: np.ndarray,
    representations: Optional[Mapping[str, np.ndarray]],
    n: int,
    *,
    metric: str,
    bins: int,
    min_count: int,
) -> Dict[str, object]:
    """Distance curves and critical lengths of the train-train pairs, one row per space."""
    reps = dict(representations or {})
    r_, m_ = len(reps), len(measures)
    out: Dict[str, object] = {
        "spaces": tuple(reps),
        "distance_edges": np.zeros((r_, bins + 1)),
        "curve_mean": np.full((r_, m_, bins), np.nan),
        "curve_count": np.zeros((r_, bins), np.int64),
        "critical_length": np.full((r_, m_), np.nan),
        "critical_length_fit": np.full((r_, m_), np.nan),
    }
    if not reps:
        return out
    s_train = {m: sub_block(mats[m], train, train) for m in measures}
    lab = labels[train]
    same_class = (lab[:, None] == lab[None, :]) & (lab[:, None] >= 0)  # no class (-1): never the same
    all_train = train.size == n and np.array_equal(train, np.arange(n))
    for r, (space, rep) in enumerate(reps.items()):
        x = np.asarray(rep)
        if x.ndim < 1 or x.shape[0] != n:
            raise ValueError(
                f"Received: representations[{space!r}] with shape {x.shape}; expected ({n}, ...), "
                f"one row per probe; fix: compute it on the same probes as the Gram matrix."
            )
        d = pairwise_distance(x if all_train else x[train], metric)
        edges = default_edges(d, metric, bins)
        centers = 0.5 * (edges[:-1] + edges[1:])
        out["distance_edges"][r] = edges
        for k, measure in enumerate(measures):
            mean, count = binned_curve(s_train[measure], d, edges)
            out["curve_mean"][r, k], out["curve_count"][r] = mean, count
            out["critical_length"][r, k] = critical_length(centers, mean, count, min_count)
            out["critical_length_fit"][r, k] = critical_length_fit(
                d, s_train[measure], same_class, min_pairs=max(min_count, 2)
            )
    return out
