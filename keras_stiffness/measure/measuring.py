"""One stiffness measurement of a model on a probe set: Gram blocks → representations → streamed summaries.

Shared by :class:`~keras_stiffness.callback.stiffness_callback.StiffnessCallback` and ``kstiff analyze`` so both write
the same thing. The model is reached only through the adapter protocol.

The ``(N, N)`` Gram matrix is never formed: the engine streams its upper blocks (diagonal ones first,
for the norms) within a memory budget, and :class:`~keras_stiffness.math.streaming.StreamingSummary`
folds each block into sums. Under a ``tf.distribute`` strategy the block pairs are shared: over the
replicas' devices on one worker, and over the workers of a ``MultiWorkerMirroredStrategy``, whose sums
are combined with the strategy's own all-reduce, so every worker ends with the same measurement.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from keras_stiffness.measure.adapters import StiffnessAdapter
from keras_stiffness.measure.config import MeasureConfig

#: A hook called with every Gram block this worker forms (e.g. to write it to a run file).
BlockHook = Callable[[object], None]


@dataclasses.dataclass
class MeasureInfo:
    """What a measurement was made from, besides its summaries.

    Attributes:
        losses: ``(N,)`` per-example losses of the probes at the current weights.
        rules: Layer name → how its Gram block was computed.
        method: ``"structured"`` or ``"jacobian"``.
        plan: The blocks used (``BlockPlan.to_dict()``): budget, block size, pairs, this worker's share.
        sampled_cos: With ``measure(..., sample_cos=True)``: cosine stiffness of train–train pairs
            ``i < j`` from this worker's blocks, every pair up to :data:`SAMPLE_PAIRS` pairs, evenly
            thinned beyond (for histograms); empty otherwise.
    """

    losses: np.ndarray
    rules: Dict[str, str]
    method: str
    plan: dict
    sampled_cos: np.ndarray


@dataclasses.dataclass
class MeasureHeader:
    """What a measurement will hold, known before its Gram blocks stream (to open a run file then).

    Attributes:
        pair_sets, measures, layers, spaces: The names of the measurement's axes.
        bins: Distance bins.
        rules: Layer name → how its Gram block is computed.
        method: ``"structured"`` or ``"jacobian"``.
        plan: The blocks (``BlockPlan.to_dict()``).
        n: Number of probes.
    """

    pair_sets: tuple
    measures: tuple
    layers: tuple
    spaces: tuple
    bins: int
    rules: Dict[str, str]
    method: str
    plan: dict
    n: int


#: Most train–train cosines kept in ``MeasureInfo.sampled_cos``.
SAMPLE_PAIRS = 2**20


class _WholeGram:
    """An adapter without ``gram_blocks``: its whole Gram matrix as the one block of a stream."""

    def __init__(self, adapter, x, y) -> None:
        from keras_stiffness.engine.blocks import BlockPlan, GramBlock, Norms

        gram = adapter.gram(x, y)
        n = gram.n
        self.layers, self.rules, self.method = list(gram.per_layer), dict(gram.rules), gram.method
        self.plan = BlockPlan(n, n, 0, 1, True)
        self.total_steps = 1
        diag = {name: np.diagonal(g).copy() for name, g in gram.per_layer.items()}
        self._norms = Norms(gram.losses, np.diagonal(gram.total).copy(), diag, np.ones(n, bool))
        self._block = GramBlock(0, 0, slice(0, n), slice(0, n), gram.total, dict(gram.per_layer))

    def norms(self):
        return self._norms

    def __iter__(self):
        yield self._block


class _Representations:
    """Representations of blocks of probes for the distance curves, cached while the budget allows."""

    def __init__(self, adapter, x, layers, bounds, cache_bytes: int) -> None:
        from keras_stiffness import nested

        self.adapter, self.x, self.layers, self.bounds = adapter, x, layers, bounds
        self.cut = nested.cut
        self._cache: Dict[int, Dict[str, np.ndarray]] = {}
        self._budget = cache_bytes
        self.spaces: List[str] = []

    def block(self, k: int) -> Dict[str, np.ndarray]:
        if k in self._cache:
            return self._cache[k]
        lo, hi = self.bounds[k]
        reps = self.adapter.representations(self.cut(self.x, lo, hi), self.layers)
        reps = {name: np.asarray(r).reshape(hi - lo, -1) for name, r in reps.items()}
        self.spaces = list(reps)
        size = sum(r.nbytes for r in reps.values())
        if size <= self._budget:
            self._cache[k] = reps
            self._budget -= size
        return reps


def _sq_max(reps: _Representations, is_val: np.ndarray, metric: str, strategy, worker_blocks) -> Dict[str, float]:
    """Largest squared norm of every space over the training probes (the cosine zero-vector threshold)."""
    from keras_stiffness.math.distance import squared_norms

    out: Dict[str, float] = {}
    for k in worker_blocks:
        lo, hi = reps.bounds[k]
        train = ~is_val[lo:hi]
        for space, r in reps.block(k).items():
            sq = squared_norms(r[train]) if train.any() else np.zeros(0)
            out[space] = max(out.get(space, 0.0), float(sq.max(initial=0.0)))
    return _reduce_max(strategy, out, reps.spaces)


def _reduce_max(strategy, values: Dict[str, float], spaces: List[str]) -> Dict[str, float]:
    from keras_stiffness.measure.distribute import all_reduce, worker_share

    if worker_share(strategy)[1] == 1:
        return values
    vector = np.array([values.get(s, -np.inf) for s in spaces])
    combined = all_reduce(strategy, {"max": vector}, {"max": "max"})["max"]
    return dict(zip(spaces, combined.tolist()))


def _euclidean_edges(reps, plan, is_val, sq_max, bins, strategy) -> Dict[str, np.ndarray]:
    """Bin edges from the largest train–train distance ``i < j`` of every space (a pass over this
    worker's block pairs; workers combine their maxima)."""
    from keras_stiffness.math.distance import block_distance, block_max_distance, distance_edges_from_max

    train = ~is_val
    largest: Dict[str, float] = {}
    for i, j in plan.my_pairs:
        (r0, r1), (c0, c1) = plan.bounds[i], plan.bounds[j]
        a, b = reps.block(i), (None if i == j else reps.block(j))
        for space, ra in a.items():
            d = block_distance(ra, None if b is None else b[space], "euclidean", sq_max=sq_max[space])
            value = block_max_distance(d, diagonal=i == j, row_mask=train[r0:r1], col_mask=train[c0:c1])
            largest[space] = max(largest.get(space, 0.0), value)
    largest = _reduce_max(strategy, largest, reps.spaces)
    return {space: distance_edges_from_max(largest.get(space, 0.0), "euclidean", bins) for space in reps.spaces}


def _sample(values: np.ndarray, kept: List[np.ndarray], n_pairs: int) -> None:
    """Keep every ``stride``-th value (a copy: a view would keep the whole block alive)."""
    stride = max(1, -(-n_pairs // SAMPLE_PAIRS))
    if values.size:
        kept.append(np.array(values[::stride], copy=True))


def measure(
    adapter: StiffnessAdapter,
    probes,
    config: MeasureConfig = MeasureConfig(),
    tags: Optional[Mapping[str, float]] = None,
    *,
    memory_budget=None,
    block_size: Optional[int] = None,
    strategy=None,
    progress: Optional[Callable[[int, int], None]] = None,
    on_block: Optional[BlockHook] = None,
    on_start: Optional[Callable[[MeasureHeader], None]] = None,
    sample_cos: bool = False,
) -> tuple:
    """Measure stiffness once, in bounded memory.

    Args:
        adapter: The model, through the adapter protocol. Adapters with ``gram_blocks`` (the Keras and
            function adapters) stream blocks; others give their whole Gram matrix as one block.
        probes: A :class:`~keras_stiffness.data.probes.ProbeSet`.
        config: What to compute.
        tags: step, epoch, train_loss, val_loss, learning_rate, wall_time.
        memory_budget: Bytes or a string such as ``"2GiB"`` for the Gram blocks, the representations
            and the summaries' temporaries (default ``min(2 GiB, memory / 4)``).
        block_size: Probes per block instead of the size the budget allows.
        strategy: A ``tf.distribute`` strategy: a ``MirroredStrategy`` spreads the block pairs over its
            devices; a ``MultiWorkerMirroredStrategy`` shares them between workers (each worker must
            call ``measure`` with the same probes; the sums are all-reduced, so all get the same result).
        progress: Called as ``progress(done, total)`` after every Gram block formed.
        on_block: Called with every :class:`~keras_stiffness.engine.blocks.GramBlock` this worker forms.
        on_start: Called with the :class:`MeasureHeader` once the norms are known, before the blocks.
        sample_cos: Keep train–train cosines in ``MeasureInfo.sampled_cos`` (for a histogram).

    Returns:
        ``(Measurement, MeasureInfo)``.

    Raises:
        ValueError: The workers' probe sets differ, NaN/Inf losses, or what the engine refuses.

    Example:
        >>> import keras
        >>> from keras_stiffness.data.probes import ProbeSet
        >>> from keras_stiffness.measure.adapters import KerasAdapter
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        >>> model.compile(loss="sparse_categorical_crossentropy")
        >>> x, y = np.random.default_rng(0).normal(size=(40, 3)).astype("float32"), np.arange(40) % 2
        >>> probes = ProbeSet(x, y, per_class=5)
        >>> m, info = measure(KerasAdapter(model), probes, MeasureConfig(bins=4, min_count=1), block_size=3)
        >>> info.plan["blocks"], -1.0 <= m.scalar("within", "train-train", "sign") <= 1.0
        (4, True)
    """
    from keras_stiffness.engine.api import check_losses
    from keras_stiffness.math.distance import block_distance
    from keras_stiffness.math.streaming import StreamingSummary, gram_inverse_norms
    from keras_stiffness.measure.distribute import all_reduce, check_same_probes, replica_devices, worker_share

    worker, workers = worker_share(strategy)
    if workers > 1:
        check_same_probes(strategy, probes.hash, probes.n)
    is_val = np.asarray(probes.is_val, dtype=bool)
    rep_bytes = 0
    if config.distances:  # a probe's representations as held, and float64 working copies of the largest
        from keras_stiffness import nested

        one = [np.asarray(r) for r in adapter.representations(nested.cut(probes.x, 0, 1), config.layers).values()]
        rep_bytes = sum(r.nbytes for r in one) + 2 * 8 * max(r.size for r in one)
    if hasattr(adapter, "gram_blocks"):
        blocks = adapter.gram_blocks(
            probes.x,
            probes.targets,  # the loss sees the labels as given
            memory_budget=memory_budget,
            block_size=block_size,
            worker=worker,
            workers=workers,
            devices=replica_devices(strategy),
            progress=progress,
            extra_probe_bytes=rep_bytes,
            extra_blocks=2 + (_space_count(adapter, config) if config.distances else 0),
        )
    else:
        blocks = _WholeGram(adapter, probes.x, probes.targets)
    plan = blocks.plan
    norms = blocks.norms()
    if workers > 1:
        reduced = all_reduce(
            strategy,
            {"losses": norms.losses, "total": norms.total, **{f"layer:{k}": v for k, v in norms.per_layer.items()}},
            {"losses": "sum", "total": "sum", **{f"layer:{k}": "sum" for k in norms.per_layer}},
        )
        norms.losses, norms.total = reduced["losses"], reduced["total"]
        norms.per_layer = {k: reduced[f"layer:{k}"] for k in norms.per_layer}
    check_losses(norms.losses, "the loss")

    reps, spaces, edges, sq_max = None, [], None, {}
    if config.distances:
        cache = max(0, plan.memory_budget // 4) if plan.memory_budget else 2**62
        reps = _Representations(adapter, probes.x, config.layers, plan.bounds, cache)
        reps.block(0)  # the spaces, in order
        shared = [k for k in range(len(plan.bounds)) if k % workers == worker]  # each worker its share
        sq_max = _sq_max(reps, is_val, config.metric, strategy, shared)
        spaces = reps.spaces
        if config.metric == "euclidean":
            edges = _euclidean_edges(reps, plan, is_val, sq_max, config.bins, strategy)
    summary = StreamingSummary(
        probes.y,
        is_val,
        probes.n_classes,
        norms.total,
        norms.per_layer,
        spaces=spaces,
        edges=edges,
        **config.summary_options(),
    )
    if on_start is not None:
        on_start(
            MeasureHeader(
                pair_sets=tuple(summary.pair_sets),
                measures=tuple(config.measures),
                layers=tuple(summary.layers),
                spaces=tuple(summary.spaces),
                bins=config.bins,
                rules=dict(blocks.rules),
                method=blocks.method,
                plan=plan.to_dict(),
                n=probes.n,
            )
        )
    inv = gram_inverse_norms(norms.total)
    train = ~is_val
    n_train_pairs = int(train.sum()) * (int(train.sum()) - 1) // 2
    kept: List[np.ndarray] = []
    for block in blocks:
        distances = None
        if reps is not None:
            a = reps.block(block.i)
            b = None if block.diagonal else reps.block(block.j)
            distances = {
                s: block_distance(a[s], None if b is None else b[s], config.metric, sq_max=sq_max[s]) for s in spaces
            }
        summary.add(block.rows, block.cols, block.total, block.per_layer, distances)
        if sample_cos:
            _sample_cos(block, inv, train, kept, n_train_pairs)
        if on_block is not None:
            on_block(block)
    if workers > 1:
        summary.load_state(all_reduce(strategy, summary.state(), StreamingSummary.REDUCE_OPS))
    m = summary.result(dict(tags or {}))
    info = MeasureInfo(
        losses=norms.losses,
        rules=dict(blocks.rules),
        method=blocks.method,
        plan=plan.to_dict(),
        sampled_cos=np.concatenate(kept) if kept else np.zeros(0),
    )
    return m, info


def _space_count(adapter, config: MeasureConfig) -> int:
    """Representation spaces a measurement will have: the input and the chosen layers."""
    if config.layers == "none":
        return 1
    if config.layers == "all":
        return 1 + len(adapter.layer_names())
    return 1 + len(config.layers)


def set_cost(m, info: MeasureInfo) -> None:
    """Copy what the measurement cost in memory and blocks into ``m``'s cost tags."""
    from keras_stiffness.math.record import COST_TAGS

    for key in COST_TAGS:
        if key in info.plan:
            setattr(m, key, float(info.plan[key]))


def _sample_cos(block, inv: np.ndarray, train: np.ndarray, kept: List[np.ndarray], n_pairs: int) -> None:
    """Keep the train–train cosines ``i < j`` of a block (thinned past SAMPLE_PAIRS pairs)."""
    rows, cols = block.rows, block.cols
    cos = block.total * inv[rows][:, None] * inv[cols][None, :]
    mask = train[rows][:, None] & train[cols][None, :]
    if block.diagonal:
        mask &= np.triu(np.ones(mask.shape, bool), k=1)
    _sample(np.clip(cos[mask], -1.0, 1.0), kept, n_pairs)
