"""``gradient_gram``: the exact Gram matrix of per-example loss gradients of a Keras model."""

from __future__ import annotations

import dataclasses
import enum
import warnings
import weakref
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from keras_stiffness.engine.memory import CAPTURE_CHUNK
from keras_stiffness.engine.rules.base import PRECISIONS
from keras_stiffness.engine.units import trainable_blocks
from keras_stiffness.validation import check_choice

#: Layers already warned about, with the reasons; weak keys, so a new layer that reuses a collected
#: layer's id() is still warned about.
_WARNED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class Method(str, enum.Enum):
    """How the Gram matrix is computed. All three are exact; they differ in cost.

    - ``STRUCTURED``: per-layer rules from one forward and one backward pass (Dense:
      ``(AAᵀ)⊙(ΔΔᵀ)``, cost ``N²(d_in + d_out)``); layers without a rule use the exact per-example
      jacobian of their own weights, with a warning naming each such layer once.
    - ``AUTO``: the same as structured; when no layer of the model has a rule it goes straight to the
      whole-model jacobian (same result, less overhead).
    - ``JACOBIAN``: the reference: per-example jacobian of the loss vector with respect to all weights,
      chunked over probes (cost ``N·P`` memory per chunk and roughly ``N`` backward passes).
    """

    AUTO = "auto"
    STRUCTURED = "structured"
    JACOBIAN = "jacobian"


@dataclasses.dataclass
class GramResult:
    """The Gram matrix of per-example gradients, total and per layer.

    The matrices are read-only (they may be views of the buffers the engine formed them in); take
    ``np.array(result.total)`` for a copy to change.

    Attributes:
        total: ``(N, N)`` float64, ``G_ij = g_i · g_j`` over all trainable weights.
        per_layer: Layer name → ``(N, N)`` block from that layer's weights; the blocks sum to ``total``.
        rules: Layer name → how its block was computed (``"dense"``, ``"conv"``, ...,
            ``"fallback:jacobian"``).
        method: The method used (``"auto"`` resolves to ``"structured"`` or ``"jacobian"``).
        losses: ``(N,)`` per-example losses at the current weights.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
        ...                           keras.layers.Dense(2, activation="softmax")])
        >>> model.compile(loss="sparse_categorical_crossentropy")
        >>> x, y = np.random.default_rng(0).normal(size=(6, 3)).astype("float32"), np.array([0, 1] * 3)
        >>> result = gradient_gram(model, x, y)
        >>> np.allclose(sum(result.per_layer.values()), result.total)
        True
    """

    total: np.ndarray
    per_layer: Dict[str, np.ndarray]
    rules: Dict[str, str]
    method: str
    losses: np.ndarray

    def __post_init__(self) -> None:
        # Read-only: the matrices may be views of the buffers they were formed in (no copies made).
        for g in [self.total, *self.per_layer.values()]:
            if isinstance(g, np.ndarray):
                g.setflags(write=False)

    @property
    def n(self) -> int:
        return int(self.total.shape[0])


def parse_method(method) -> Method:
    """Validate ``method`` at the public entry."""
    try:
        return Method(method)
    except ValueError as exc:
        raise ValueError(f"Received method={method!r}; expected one of {[m.value for m in Method]}.") from exc


def check_probes(x, y) -> tuple:
    """Probes as NumPy arrays, checked: lengths, N >= 2, numeric finite inputs.

    ``x`` is one array, or a dict/list/tuple of arrays for a multi-input model (see
    :mod:`keras_stiffness.nested`): every leaf is checked and must have the same length ``N``.
    """
    from keras_stiffness import nested

    x = nested.as_arrays(x)
    y = np.asarray(y)
    named = nested.leaves_with_paths(x, "x")
    for name, leaf in named:
        if leaf.ndim == 0 or y.ndim == 0:
            raise ValueError(
                f"Received {name} of shape {leaf.shape} and y of shape {y.shape}; expected arrays with the "
                "probes along the first axis."
            )
    n = len(named[0][1])
    for name, leaf in named[1:]:
        if len(leaf) != n:
            raise ValueError(
                f"Received {named[0][0]} with {n} examples and {name} with {len(leaf)}; expected every input "
                "with the same number of examples."
            )
    if n != len(y):
        raise ValueError(
            f"Received x with {n} examples and y with {len(y)}; expected the same number of inputs and labels."
        )
    if n < 2:
        raise ValueError(f"Received N={n} probe(s); stiffness compares pairs, so at least 2 are needed.")
    for name, leaf in named:
        if not np.issubdtype(leaf.dtype, np.number) and leaf.dtype != bool:
            raise TypeError(f"Received {name} of dtype {leaf.dtype}; expected numeric inputs.")
        if np.issubdtype(leaf.dtype, np.floating):
            bad = ~np.isfinite(leaf)
            if bad.any():
                first = int(np.flatnonzero(bad.reshape(len(leaf), -1).any(axis=1))[0])
                raise ValueError(
                    f"Received {name} with {int(bad.sum())} NaN/Inf value(s) (first in example {first}); "
                    "expected finite inputs. Fix: clean or re-standardize the probes."
                )
    return x, y


def check_model(model) -> None:
    """The model must be a built Keras model."""
    import keras

    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"Received model of type {type(model).__name__}; expected a Keras model. For other "
            "TensorFlow models use keras_stiffness.FunctionAdapter(per_example_loss, variables)."
        )
    if not model.built:
        raise ValueError(
            f"Received an unbuilt model {model.name!r} (its weights do not exist yet); expected a "
            "built model. Fix: call model.build(input_shape), or call the model on a batch first."
        )
    if not model.trainable_variables:
        raise ValueError(f"Received model {model.name!r} with no trainable weights; stiffness needs gradients.")


def cast_to_model_dtype(model, x):
    """Floating inputs in the dtype the model computes in (float64 models keep float64 probes).

    A nested ``x`` (several inputs) has every floating leaf cast; integer leaves are kept.
    """
    from keras_stiffness import nested

    if nested.is_nested(x):
        return nested.map_leaves(lambda leaf: cast_to_model_dtype(model, np.asarray(leaf)), x)
    if not np.issubdtype(x.dtype, np.floating):
        return x
    dtype = None
    inputs = getattr(model, "inputs", None)
    if inputs:
        dtype = getattr(inputs[0], "dtype", None)
    dtype = np.dtype(str(dtype or model.compute_dtype or "float32"))
    return x.astype(dtype if np.issubdtype(dtype, np.floating) else np.float32, copy=False)


def _warn_fallback(unit) -> None:
    key = unit.layer if unit.layer is not None else _WARNED_SHARED
    try:
        reasons = _WARNED.setdefault(key, set())
    except TypeError:  # not weakly referenceable: warn each time rather than risk a stale id
        reasons = set()
    if (unit.name, unit.reason) in reasons:
        return
    reasons.add((unit.name, unit.reason))
    if unit.layer is None:
        what = f"Weight {unit.name.removeprefix('shared:')!r}"
        how = "the exact per-example jacobian of the whole loss for it (slower)"
    else:
        what = f"Layer {unit.layer.name!r} ({type(unit.layer).__name__})"
        how = "the exact per-example jacobian of its weights (slower)"
    warnings.warn(
        f"{what}: {unit.reason}; using {how}. Register a rule with keras_stiffness.register_rule to speed it up.",
        stacklevel=3,
    )


class _SharedKey:
    """Weak-referenceable key under which warnings about shared variables are remembered."""


_WARNED_SHARED = _SharedKey()


@dataclasses.dataclass
class BlockCapture:
    """One block of probes, captured: the rules' inputs per layer and the per-example losses."""

    lo: int
    hi: int
    captures: Optional[Dict[str, Any]]
    losses: Optional[np.ndarray]


@dataclasses.dataclass
class ModelFacts:
    """What :class:`Prepared` learns about a model, loss and probe shape once (cached with the model,
    see :mod:`keras_stiffness.engine.model_cache`): none of it depends on the weights' values.

    Attributes:
        layered: On the structured route, the units with a layer in forward order; empty on the
            jacobian route.
        shared: On the structured route, the shared-variable units; empty on the jacobian route.
    """

    per_example_loss: Callable
    loss_name: str
    out_shape: tuple
    units: list
    method: str
    layered: list
    shared: list
    probe_bytes: int
    traced: Any = None
    products: Any = None

    @property
    def blocks(self) -> list:
        """The units that get a block, in the order of the results."""
        return self.layered + self.shared if self.method == Method.STRUCTURED.value else list(self.units)

    @property
    def layer_names(self) -> list:
        return [u.name for u in self.blocks]

    @property
    def rules(self) -> Dict[str, str]:
        """Block name → how it is computed (the jacobian for shared variables and on that route)."""
        structured = self.method == Method.STRUCTURED.value
        return {u.name: u.rule_name if structured and u.layer is not None else "jacobian" for u in self.blocks}

    @classmethod
    def build(cls, model, units, x, y, loss, method: "Method", precision: str) -> "ModelFacts":
        from keras_stiffness import nested
        from keras_stiffness.engine.capture import capture, capture_bytes
        from keras_stiffness.engine.losses import check_labels, resolve_loss
        from keras_stiffness.engine.traced import TracedCapture, TracedProducts

        per_example_loss, loss_name = resolve_loss(model, loss)
        out_shape = tuple(np.asarray(model(nested.cut(x, 0, 2), training=False)).shape)
        check_labels(y, out_shape, loss_name)  # before the sample capture differentiates the loss
        facts = cls(per_example_loss, loss_name, out_shape, units, method.value, [], [], 0)
        if method is Method.JACOBIAN:
            facts.probe_bytes = sum(leaf[:1].nbytes for leaf in nested.leaves(x)) + 8
            return facts
        sample, _, _ = capture(
            model, units, nested.cut(x, 0, 2), y[:2], per_example_loss, chunk_size=2, precision=precision
        )
        facts.layered = _forward_order([u for u in units if u.layer is not None], sample)
        facts.shared = [u for u in units if u.layer is None]
        facts.probe_bytes = max(1, capture_bytes(sample) // 2)
        facts.traced = TracedCapture(model, units, per_example_loss)
        facts.products = TracedProducts(facts.layered, _rule_blocks)
        return facts


class Prepared:
    """A checked model, probes and loss, ready for Gram blocks (what ``gradient_gram`` checks once).

    Attributes:
        layer_names: Per-layer block names in forward order (shared variables last).
        rules: Layer name → how its block is computed.
        method: The method used (``"structured"`` or ``"jacobian"``).
        probe_bytes: Bytes one probe's capture holds (sets the block size under a budget).
        n: Number of probes.
    """

    def __init__(self, model, x, y, *, loss=None, method="auto", chunk_size=None, precision="float32") -> None:
        from keras_stiffness import nested
        from keras_stiffness.engine.losses import check_labels, loss_identity
        from keras_stiffness.engine.model_cache import cached_units, model_cache

        method = parse_method(method)
        check_choice(precision, "precision", PRECISIONS)
        check_model(model)
        x, y = check_probes(x, y)
        self.model, self.precision = model, precision
        self.x, self.y = cast_to_model_dtype(model, x), y
        self.n = nested.n_rows(self.x)
        self.chunk_size = chunk_size or CAPTURE_CHUNK
        cache = model_cache(model)
        units = cached_units(model)
        if method is Method.AUTO:
            method = Method.JACOBIAN if all(u.rule is None for u in units) else Method.STRUCTURED
        probe_signature = tuple((leaf.shape[1:], leaf.dtype.str) for leaf in nested.leaves(self.x))
        loss_key, loss_anchor = loss_identity(loss if loss is not None else getattr(model, "loss", None))
        facts = cache.get(
            ("prepared", method.value, precision, self.chunk_size, probe_signature, loss is None, loss_key),
            (loss_anchor, units),
            lambda: ModelFacts.build(model, units, self.x, y, loss, method, precision),
        )
        check_labels(y, facts.out_shape, facts.loss_name)
        self.facts = facts
        self.per_example_loss, self.loss_name = facts.per_example_loss, facts.loss_name
        self.units, self.method, self.probe_bytes = facts.units, facts.method, facts.probe_bytes
        self._layered, self._shared = facts.layered, facts.shared
        self.layer_names, self.rules = facts.layer_names, facts.rules

    def capture_block(self, lo: int, hi: int) -> BlockCapture:
        """The capture pass over probes ``lo:hi`` (nothing to capture on the jacobian route)."""
        from keras_stiffness import nested
        from keras_stiffness.engine.capture import capture

        if self.method == Method.JACOBIAN.value:
            return BlockCapture(lo, hi, None, None)
        captures, losses, _ = capture(
            self.model,
            self.units,
            nested.cut(self.x, lo, hi),
            self.y[lo:hi],
            self.per_example_loss,
            chunk_size=self.chunk_size,
            precision=self.precision,
            run_chunk=self.facts.traced,
        )
        return BlockCapture(lo, hi, captures, losses)

    def _stacked_probes(self, first: BlockCapture, second: BlockCapture) -> tuple:
        from keras_stiffness import nested

        if first is second:
            return nested.cut(self.x, first.lo, first.hi), self.y[first.lo : first.hi], None
        x = nested.concat([nested.cut(self.x, first.lo, first.hi), nested.cut(self.x, second.lo, second.hi)])
        y = np.concatenate([self.y[first.lo : first.hi], self.y[second.lo : second.hi]])
        return x, y, first.hi - first.lo

    def pair_grams(self, first: BlockCapture, second: BlockCapture, block_elements: int) -> tuple:
        """Per-layer Gram blocks between two captured blocks (the diagonal block when they are one).

        On the jacobian route a diagonal block also fills ``first.losses``.

        Returns:
            ``(per_layer, total)``: layer name → block, in :attr:`layer_names` order, and their sum when
            it was formed with them (one compiled graph for every layer), else None.
        """
        from keras_stiffness.engine.capture import stack_captures
        from keras_stiffness.engine.fallback import layer_fallback_gram, model_jacobian_grams

        shape = (first.hi - first.lo, second.hi - second.lo)
        if self.method == Method.JACOBIAN.value:
            x, y, split = self._stacked_probes(first, second)
            grams, losses = model_jacobian_grams(self.model, self.units, x, y, self.per_example_loss, split=split)
            if split is None:
                first.losses = losses
            return {name: grams[name] for name in self.layer_names}, None
        out: Dict[str, np.ndarray] = {}
        layer_captures: Dict[str, Any] = {}
        for unit in self._layered:
            captured = first.captures.get(unit.name)
            if captured is None:  # the layer was never called: its weights get no gradient
                out[unit.name] = np.zeros(shape)
                continue
            if second is not first:
                captured = stack_captures(captured, second.captures[unit.name])
            captured.block_elements = block_elements
            layer_captures[unit.name] = captured
        compiled = self.facts.products(layer_captures, shape) if self.facts.products is not None else None
        if compiled is not None:
            out.update(compiled.per_layer)
        for unit in self._layered:
            if unit.name in out:
                continue
            captured = layer_captures[unit.name]
            if unit.rule is None:
                _warn_fallback(unit)
                out[unit.name] = _sum(layer_fallback_gram(unit, captured), shape)
            else:
                out[unit.name] = _sum(_rule_blocks(unit, captured), shape)
        if self._shared:  # tied weights: the exact per-example jacobian of the whole loss, those variables only
            for unit in self._shared:
                _warn_fallback(unit)
            x, y, split = self._stacked_probes(first, second)
            grams, _ = model_jacobian_grams(self.model, self._shared, x, y, self.per_example_loss, split=split)
            for unit in self._shared:
                out[unit.name] = grams[unit.name]
        uncalled = {u.name for u in self._layered if u.name not in layer_captures}  # zero blocks
        complete = compiled is not None and all(n in compiled.per_layer or n in uncalled for n in self.layer_names)
        return {name: out[name] for name in self.layer_names}, compiled.total if complete else None


def gram_blocks(
    model,
    x,
    y,
    *,
    loss=None,
    method: str = "auto",
    memory_budget=None,
    block_size: Optional[int] = None,
    chunk_size: Optional[int] = None,
    precision: str = "float32",
    worker: int = 0,
    workers: int = 1,
    devices: Sequence[str] = (),
    progress: Optional[Callable[[int, int], None]] = None,
    extra_probe_bytes: int = 0,
    extra_blocks: int = 0,
):
    """The exact Gram matrix of per-example loss gradients as a stream of blocks, in bounded memory.

    The same checks, rules and results as :func:`gradient_gram`, but the ``(N, N)`` matrix is never
    formed: call ``.norms()`` for every probe's loss and squared gradient norm (total and per layer),
    then iterate for the blocks ``(I, J)``, ``I <= J`` (the matrix is symmetric), diagonal ones first.

    Args:
        model, x, y, loss, method, chunk_size, precision: As for :func:`gradient_gram`.
        memory_budget: Bytes (or ``"2GiB"``) for captures, products and the caller's per-block work;
            None: ``min(2 GiB, memory / 4)``.
        block_size: Probes per block instead of the size the budget allows.
        worker, workers: Form only this worker's share of the block pairs (pair ``p`` goes to worker
            ``p mod workers``).
        devices: Spread the pairs over these devices (e.g. a MirroredStrategy's replicas).
        progress: Called as ``progress(done, total)`` after every block formed.
        extra_probe_bytes, extra_blocks: What the caller holds per probe of a block and per pair (in
            ``(b, b)`` float64 blocks), counted in the budget.

    Returns:
        A :class:`~keras_stiffness.engine.blocks.GramBlocks` with ``.plan``, ``.layers``, ``.rules``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax", name="out")])
        >>> model.compile(loss="sparse_categorical_crossentropy")
        >>> x_probe = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
        >>> blocks = gram_blocks(model, x_probe, np.array([0, 1, 0, 1, 0]), block_size=2)
        >>> norms = blocks.norms()
        >>> [(b.i, b.j, b.total.shape) for b in blocks][:4]
        [(0, 0, (2, 2)), (1, 1, (2, 2)), (2, 2, (1, 1)), (0, 1, (2, 2))]
    """
    from keras_stiffness.engine.blocks import GramBlocks, plan_blocks

    setup = Prepared(model, x, y, loss=loss, method=method, chunk_size=chunk_size, precision=precision)
    plan = plan_blocks(
        setup.n,
        probe_bytes=setup.probe_bytes + int(extra_probe_bytes),
        layers=len(setup.layer_names),
        memory_budget=memory_budget,
        block_size=block_size,
        worker=worker,
        workers=workers,
        extra_blocks=extra_blocks,
    )
    return GramBlocks(setup, plan, devices=devices, progress=progress)


def gradient_gram(
    model,
    x,
    y,
    *,
    loss=None,
    method: str = "auto",
    chunk_size: Optional[int] = None,
    precision: str = "float32",
    memory_budget=None,
    block_size: Optional[int] = None,
) -> GramResult:
    """Exact Gram matrix ``G_ij = g_i · g_j`` of per-example loss gradients over all trainable weights.

    Inference mode always (dropout off, BatchNormalization on its moving statistics); regularization
    losses are excluded. Nothing in the model changes: weights, optimizer and statistics are untouched.
    The whole matrix is returned; for large ``N`` use :func:`gram_blocks` (or a measurement), which
    never forms it.

    What is learned about the model (its units, the loss, the probes' shapes) is kept with it, and the
    second call of the same shape compiles the capture pass and the products of the rules that
    trace (Dense) into ``tf.function`` graphs that later calls reuse (see
    :mod:`keras_stiffness.engine.traced`): a callback's repeated measurements run compiled, a single
    call never pays for tracing.

    Args:
        model: A built Keras model (Sequential, functional or subclassed), single output.
        x: ``(N, ...)`` probe inputs; for a model with several inputs, a dict, list or tuple of
            ``(N, ...)`` arrays as the model takes them (every leaf checked, cast and sliced alike).
        y: ``(N,)`` integer labels or ``(N, ...)`` targets shaped like the model's output.
        loss: Defaults to the model's compiled loss; or a Keras ``Loss`` (any reduction), a loss name,
            or a callable ``(y_true, y_pred) -> (N,)`` per-example losses.
        method: ``"auto"``, ``"structured"`` or ``"jacobian"`` (see :class:`Method`).
        chunk_size: Probes per capture pass (default 1024).
        precision: ``"float32"`` (default): the structured rules' Gram products are TensorFlow float32
            ops where the model runs, accumulated in float64 across blocks and layers; ``"float64"``:
            float64 throughout. Float64 models always get float64. The jacobian reference is float64.
        memory_budget: Bytes (or ``"2GiB"``) for the work besides the result; the matrix is formed in
            blocks that fit (default ``min(2 GiB, memory / 4)``).
        block_size: Probes per block instead of the size the budget allows.

    Returns:
        A :class:`GramResult` (read-only arrays).

    Raises:
        ValueError: Mismatched lengths, N < 2, NaN/Inf inputs, labels out of range, an unbuilt model,
            no loss, an unknown method.
        TypeError: A model that is not a Keras model, or an unsupported loss.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="hidden"),
        ...                           keras.layers.Dense(2, activation="softmax", name="out")])
        >>> model.compile(loss="sparse_categorical_crossentropy")
        >>> x_probe = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
        >>> result = gradient_gram(model, x_probe, np.array([0, 1, 0, 1, 0, 1]))
        >>> result.total.shape, sorted(result.per_layer), result.rules["out"]
        ((6, 6), ['hidden', 'out'], 'dense')
    """
    from keras_stiffness.engine.blocks import GramBlocks, plan_blocks

    setup = Prepared(model, x, y, loss=loss, method=method, chunk_size=chunk_size, precision=precision)
    n = setup.n
    plan = plan_blocks(
        n,
        probe_bytes=setup.probe_bytes,
        layers=len(setup.layer_names),
        memory_budget=memory_budget,
        block_size=block_size,
    )
    blocks = GramBlocks(setup, plan, keep_diagonal=True)
    losses = blocks.norms().losses
    if len(plan.bounds) == 1:  # one block: its fresh arrays are the result (no copies)
        block = next(iter(blocks))
        check_losses(losses, setup.loss_name)
        return GramResult(
            total=block.total, per_layer=block.per_layer, rules=dict(setup.rules), method=setup.method, losses=losses
        )
    per_layer = {name: np.empty((n, n)) for name in setup.layer_names}
    total = np.empty((n, n))
    for block in blocks:
        for name, g in [(None, block.total)] + list(block.per_layer.items()):
            whole = total if name is None else per_layer[name]
            whole[block.rows, block.cols] = g
            if not block.diagonal:
                whole[block.cols, block.rows] = g.T
    check_losses(losses, setup.loss_name)
    return GramResult(total=total, per_layer=per_layer, rules=dict(setup.rules), method=setup.method, losses=losses)


def _forward_order(units, captures):
    """Units in the order their layers were first called (uncalled ones last)."""
    order = list(captures)
    return sorted(units, key=lambda u: order.index(u.name) if u.name in order else len(order))


def _sum(blocks: Dict[str, Any], shape: tuple) -> np.ndarray:
    """Sum of per-weight blocks in float64, back on the host once per layer.

    Rules return fresh float64 NumPy arrays (summed in place), or TensorFlow tensors in their product
    precision: those are summed where they live, in float64, and the result is a read-only view of
    that sum (no float64 copy on the CPU: fresh host memory costs more than the sum itself).
    """
    values = list(blocks.values())
    if not values:
        return np.zeros(shape)
    if all(isinstance(g, np.ndarray) for g in values):
        total = values[0]
        for g in values[1:]:
            total += g
        return total
    import tensorflow as tf

    return np.asarray(tf.add_n([tf.cast(tf.convert_to_tensor(g), tf.float64) for g in values]))


def _rule_blocks(unit, captured) -> Dict[str, Any]:
    """A unit's rule blocks under the trainable-variable contract."""
    return trainable_blocks(unit, unit.rule.gram(unit.layer, captured))


def total_of(per_layer: Dict[str, np.ndarray], n: int) -> np.ndarray:
    """The total Gram: the sum of the per-layer blocks (a new array; the blocks are left as they are)."""
    from keras_stiffness.engine.blocks import block_total

    return block_total(per_layer, (n, n))


def check_losses(losses: np.ndarray, loss_name: str) -> None:
    """Raise ValueError when any per-example loss is NaN/Inf (naming how many and the first)."""
    bad = ~np.isfinite(losses)
    if bad.any():
        raise ValueError(
            f"The loss {loss_name!r} is NaN/Inf for {int(bad.sum())} probe(s) (first: index "
            f"{int(np.flatnonzero(bad)[0])}); expected finite losses. Fix: check the labels and the "
            "model's output (e.g. probabilities vs logits and the loss's from_logits setting)."
        )
