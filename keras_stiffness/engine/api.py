"""``gradient_gram``: the exact Gram matrix of per-example loss gradients of a Keras model."""

from __future__ import annotations

import dataclasses
import enum
import warnings
import weakref
from typing import Any, Dict, Optional

import numpy as np

from keras_stiffness.engine.memory import CAPTURE_CHUNK
from keras_stiffness.engine.rules.base import PRECISIONS
from keras_stiffness.engine.units import model_units, trainable_blocks
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


def gradient_gram(
    model,
    x,
    y,
    *,
    loss=None,
    method: str = "auto",
    chunk_size: Optional[int] = None,
    precision: str = "float32",
) -> GramResult:
    """Exact Gram matrix ``G_ij = g_i · g_j`` of per-example loss gradients over all trainable weights.

    Inference mode always (dropout off, BatchNormalization on its moving statistics); regularization
    losses are excluded. Nothing in the model changes: weights, optimizer and statistics are untouched.

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

    Returns:
        A :class:`GramResult`.

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
    from keras_stiffness import nested
    from keras_stiffness.engine.losses import check_labels, resolve_loss

    method = parse_method(method)
    check_choice(precision, "precision", PRECISIONS)
    check_model(model)
    x, y = check_probes(x, y)
    per_example_loss, loss_name = resolve_loss(model, loss)
    x = cast_to_model_dtype(model, x)
    n = nested.n_rows(x)
    out_shape = tuple(np.asarray(model(nested.cut(x, 0, 2), training=False)).shape)
    check_labels(y, out_shape, loss_name)
    units = model_units(model)
    method_used = method
    if method is Method.AUTO:
        method_used = Method.JACOBIAN if all(u.rule is None for u in units) else Method.STRUCTURED
    if method_used is Method.JACOBIAN:
        from keras_stiffness.engine.fallback import model_jacobian_grams

        per_layer, losses = model_jacobian_grams(model, units, x, y, per_example_loss)
        rules = {u.name: "jacobian" for u in units}
    else:
        per_layer, losses, rules = _structured(model, units, x, y, per_example_loss, chunk_size, precision)
    check_losses(losses, loss_name)
    total = total_of(per_layer, n)
    return GramResult(total=total, per_layer=per_layer, rules=rules, method=method_used.value, losses=losses)


def _structured(model, units, x, y, per_example_loss, chunk_size, precision="float32") -> tuple:
    from keras_stiffness.engine.capture import capture
    from keras_stiffness.engine.fallback import layer_fallback_gram

    captures, losses, _ = capture(
        model, units, x, y, per_example_loss, chunk_size=chunk_size or CAPTURE_CHUNK, precision=precision
    )
    n = len(y)
    per_layer: Dict[str, np.ndarray] = {}
    rules: Dict[str, str] = {}
    shared = [u for u in units if u.layer is None]
    for unit in _forward_order([u for u in units if u.layer is not None], captures):
        captured = captures.get(unit.name)
        if captured is None:  # the layer was never called: its weights get no gradient
            per_layer[unit.name] = np.zeros((n, n))
        elif unit.rule is None:
            _warn_fallback(unit)
            per_layer[unit.name] = _sum(layer_fallback_gram(unit, captured), n)
        else:
            per_layer[unit.name] = _sum(trainable_blocks(unit, unit.rule.gram(unit.layer, captured)), n)
        rules[unit.name] = unit.rule_name
    if shared:  # tied weights: the exact per-example jacobian of the whole loss, those variables only
        from keras_stiffness.engine.fallback import model_jacobian_grams

        for unit in shared:
            _warn_fallback(unit)
        grams, _ = model_jacobian_grams(model, shared, x, y, per_example_loss)
        for unit in shared:
            per_layer[unit.name] = grams[unit.name]
            rules[unit.name] = "jacobian"
    return per_layer, losses, rules


def _forward_order(units, captures):
    """Units in the order their layers were first called (uncalled ones last)."""
    order = list(captures)
    return sorted(units, key=lambda u: order.index(u.name) if u.name in order else len(order))


def _sum(blocks: Dict[str, Any], n: int) -> np.ndarray:
    """Sum of per-weight blocks in float64, back on the host once per layer.

    Rules return fresh float64 NumPy arrays, or TensorFlow tensors in their product precision (summed
    where they live, in float64).
    """
    values = list(blocks.values())
    if not values:
        return np.zeros((n, n))
    if all(isinstance(g, np.ndarray) for g in values):
        total = values[0]
        for g in values[1:]:
            total += g
        return total
    import tensorflow as tf

    return tf.add_n([tf.cast(tf.convert_to_tensor(g), tf.float64) for g in values]).numpy()


def total_of(per_layer: Dict[str, np.ndarray], n: int) -> np.ndarray:
    """The total Gram: the sum of the per-layer blocks (a new array; the blocks are left as they are)."""
    total = np.zeros((n, n))
    for g in per_layer.values():
        total += g
    return total


def check_losses(losses: np.ndarray, loss_name: str) -> None:
    """Raise ValueError when any per-example loss is NaN/Inf (naming how many and the first)."""
    bad = ~np.isfinite(losses)
    if bad.any():
        raise ValueError(
            f"The loss {loss_name!r} is NaN/Inf for {int(bad.sum())} probe(s) (first: index "
            f"{int(np.flatnonzero(bad)[0])}); expected finite losses. Fix: check the labels and the "
            "model's output (e.g. probabilities vs logits and the loss's from_logits setting)."
        )
