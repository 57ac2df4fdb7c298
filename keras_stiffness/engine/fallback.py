"""Exact per-example jacobians, chunked over probes so memory stays bounded.

Two uses: the fallback for one layer without a rule (the jacobian of that layer's weights alone, from
its captured inputs and output gradients), and the whole-model reference (the jacobian of the
per-example loss vector with respect to every trainable weight).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from keras_stiffness import keras_compat, nested
from keras_stiffness.engine.memory import JACOBIAN_CACHE_ELEMENTS, JACOBIAN_CHUNK_ELEMENTS, PFOR_ELEMENTS
from keras_stiffness.engine.rules.base import LayerCapture


def chunk_size_for(width: int, n: int, activations: int = 0) -> int:
    """Probes per jacobian chunk for ``width`` parameters and ``activations`` per example."""
    step = JACOBIAN_CHUNK_ELEMENTS // max(1, width)
    if activations:
        step = min(step, int(np.sqrt(PFOR_ELEMENTS / activations)))
    return max(1, min(n, step))


def gram_from_chunks(
    compute: Callable[[int, int], Dict[str, np.ndarray]],
    n: int,
    width: int,
    activations: int = 0,
    split: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """Gram blocks ``J_g J_gᵀ`` per group from chunked per-example jacobians.

    Args:
        compute: ``(lo, hi) -> {group: (hi - lo, p_g) jacobian}``.
        n: Number of probes.
        width: Total parameters over groups (sets the chunk size).
        activations: Activation elements per example (bounds the chunk of a vectorized jacobian).
        split: ``None`` for the square ``(n, n)`` Gram; or ``s``: only the cross block between probes
            ``[0, s)`` and ``[s, n)``, ``(s, n - s)`` (see ``rules.base.Products``).

    Returns:
        ``{group: block}`` float64.
    """
    step = chunk_size_for(width, n, activations)
    if split is None:
        left = right = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
        offset = 0
    else:
        left = [(lo, min(split, lo + step)) for lo in range(0, split, step)]
        right = [(lo, min(n, lo + step)) for lo in range(split, n, step)]
        offset = split
    if n * width <= JACOBIAN_CACHE_ELEMENTS or len(left) + len(right) <= 2:
        parts = {b: compute(*b) for b in dict.fromkeys(left + right)}
        stacked = {
            side: {g: np.concatenate([parts[b][g] for b in bounds]) for g in parts[left[0]]}
            for side, bounds in (("left", left), ("right", right))
        }
        return {g: stacked["left"][g] @ stacked["right"][g].T for g in stacked["left"]}
    out: Dict[str, np.ndarray] = {}
    for bi, (lo, hi) in enumerate(left):
        ji = compute(lo, hi)
        for lo2, hi2 in right[: bi + 1] if split is None else right:
            jj = ji if lo2 == lo else compute(lo2, hi2)
            for g in ji:
                block = out.setdefault(g, np.zeros((left[-1][1] - left[0][0], n - offset)))
                b = ji[g] @ jj[g].T
                block[lo:hi, lo2 - offset : hi2 - offset] = b
                if split is None:
                    block[lo2:hi2, lo:hi] = b.T
    return out


def pfor_is_exact(layer) -> bool:
    """False when ``layer`` contains an op whose pfor (vectorized jacobian) converter is wrong.

    Known case: grouped convolutions (``groups > 1``): TF 2.21's pfor gives wrong per-example kernel
    gradients for them (checked against a per-example loop), so those models use the while loop.
    """
    for sub in keras_compat.all_layers(layer):
        if (getattr(sub, "groups", 1) or 1) > 1:
            return False
    return True


def jacobian_rows(tape, target, variables: Sequence, use_pfor: bool = True) -> List[np.ndarray]:
    """``∂target_i/∂v`` for every variable as float64 ``(b, size(v))``; pfor, else a while loop."""
    sources = [_tf_variable(v) for v in variables]
    jac = None
    if use_pfor:
        try:
            jac = tape.jacobian(target, sources, experimental_use_pfor=True)
        except Exception:  # noqa: BLE001 - pfor has no converter for some ops; the loop is exact too
            jac = None
    if jac is None:
        jac = tape.jacobian(target, sources, experimental_use_pfor=False)
    b = int(target.shape[0])
    rows = []
    for v, j in zip(variables, jac):
        if j is None:
            rows.append(np.zeros((b, int(np.prod(v.shape)))))
        else:
            rows.append(np.asarray(j, dtype=np.float64).reshape(b, -1))
    return rows


def _tf_variable(variable):
    """The ``tf.Variable`` a tape can watch: a plain one as is, the backend one behind a Keras variable
    (on a plain ``tf.Variable``, ``.value`` is a method, not the variable)."""
    import tensorflow as tf

    if isinstance(variable, tf.Variable):
        return variable
    return getattr(variable, "value", variable)


def _slice_probes(value, lo: int, hi: int, n: int):
    import tensorflow as tf

    def cut(v):
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n:
            return tf.convert_to_tensor(v[lo:hi])
        return v

    return tf.nest.map_structure(cut, value)


def layer_fallback_gram(unit, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """Exact Gram of one layer's weights from its captured calls: per-example jacobian of
    ``Σ_calls Σ_outputs ⟨f(args_i), δ_i⟩`` with respect to the layer's own weights, chunked."""
    import tensorflow as tf

    layer, variables, n = unit.layer, unit.variables, captured.n
    width = int(sum(np.prod(v.shape) for v in variables))

    def compute(lo: int, hi: int) -> Dict[str, np.ndarray]:
        with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
            for v in variables:
                tape.watch(_tf_variable(v))
            total = 0.0
            for call in captured.calls:
                args = _slice_probes(call.args, lo, hi, n)
                kwargs = _slice_probes(call.kwargs, lo, hi, n)
                if "training" in kwargs:
                    kwargs["training"] = False
                leaves = tf.nest.flatten(layer.call(*args, **kwargs))
                for k, leaf in enumerate(leaves):
                    key = "out" if k == 0 else f"out.{k}"
                    if key not in call.grads:
                        continue
                    g = tf.convert_to_tensor(call.grads[key][lo:hi], dtype=leaf.dtype)
                    prod = tf.reshape(leaf * g, (hi - lo, -1))
                    total = total + tf.reduce_sum(prod, axis=1)
        rows = jacobian_rows(tape, total, variables, use_pfor=pfor_is_exact(layer))
        return {variable_key(v): r for v, r in zip(variables, rows)}

    return gram_from_chunks(compute, n, width, split=captured.split)


def variable_key(variable) -> str:
    """A unique name for a variable: its Keras path (``"dense/kernel"``) or its name."""
    return str(getattr(variable, "path", None) or variable.name)


def jacobian_grams(
    loss_of: Callable, groups: Dict[str, list], n: int, use_pfor: bool = True, split: Optional[int] = None
) -> tuple:
    """Per-group Grams from the per-example jacobian of a loss vector, chunked over probes (eager).

    Args:
        loss_of: ``(lo, hi) -> (hi - lo,)`` per-example losses of probes ``lo:hi`` (a tensor computed
            under the active tape).
        groups: Group name → variables (each variable in one group).
        n: Number of probes.
        use_pfor: Vectorize the jacobian (pfor); False runs a while loop over probes.
        split: Only the cross block between probes ``[0, split)`` and ``[split, n)`` (see ``gram_from_chunks``).

    Returns:
        ``({group: (N, N)}, losses (N,))``.
    """
    import tensorflow as tf

    variables = [v for vs in groups.values() for v in vs]

    def chunk(lo: int, hi: int):
        with tf.GradientTape(watch_accessed_variables=False, persistent=not use_pfor) as tape:
            for v in variables:
                tape.watch(_tf_variable(v))
            loss = tf.reshape(tf.convert_to_tensor(loss_of(lo, hi)), (-1,))
        if int(loss.shape[0]) != hi - lo:
            raise ValueError(
                f"The per-example loss returned {int(loss.shape[0])} values for {hi - lo} examples; "
                "expected one loss per example (no reduction over the batch)."
            )
        return loss, jacobian_rows(tape, loss, variables, use_pfor=use_pfor)

    return _grouped_grams(chunk, groups, n, split=split)


def _grouped_grams(
    chunk: Callable, groups: Dict[str, list], n: int, activations: int = 0, split: Optional[int] = None
) -> tuple:
    """Run ``chunk(lo, hi) -> (losses, per-variable rows)`` over probes and form the group Grams."""
    width = int(sum(np.prod(v.shape) for vs in groups.values() for v in vs))
    losses = np.zeros(n)

    def compute(lo: int, hi: int) -> Dict[str, np.ndarray]:
        loss, rows = chunk(lo, hi)
        losses[lo:hi] = np.asarray(loss)
        out, k = {}, 0
        for name, vs in groups.items():
            out[name] = np.concatenate(rows[k : k + len(vs)], axis=1)
            k += len(vs)
        return out

    return gram_from_chunks(compute, n, width, activations, split), losses


def activations_per_example(model, units, x) -> int:
    """Elements of the input and of every weighted layer's output for one example, doubled (outputs
    and their pre-activations): what a vectorized jacobian multiplies by the chunk size squared."""
    from keras_stiffness.engine.capture import capture

    _, _, outputs = capture(model, units, nested.cut(x, 0, 1), None, None, chunk_size=1, grads=False)
    inputs = sum(int(np.prod(leaf.shape[1:])) for leaf in nested.leaves(x))
    return 2 * (inputs + sum(int(np.prod(o.shape[1:])) for o in outputs.values()))


def model_jacobian_grams(model, units, x, y, per_example_loss, split: Optional[int] = None) -> tuple:
    """The whole-model reference: per-example jacobian of the loss vector, grouped by unit.

    With ``split``, ``x`` holds two probe blocks stacked and only their cross block is formed.

    Each chunk runs one compiled ``tf.function`` (traced once per chunk shape): forward, per-example
    losses and their jacobian (pfor, or a while loop where pfor is known to be wrong).

    Returns:
        ``({unit name: (N, N)}, losses (N,))``.
    """
    import tensorflow as tf

    groups = {u.name: u.variables for u in units}
    variables = [v for u in units for v in u.variables]
    sources = [_tf_variable(v) for v in variables]
    use_pfor = pfor_is_exact(model)

    def make_jac(pfor: bool):
        @tf.function(reduce_retracing=True)
        def jac(xb, yb):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                for v in sources:
                    tape.watch(v)
                loss = per_example_loss(yb, model(xb, training=False))
            return loss, tape.jacobian(loss, sources, experimental_use_pfor=pfor)

        return jac

    compiled = {"jac": make_jac(use_pfor)}

    def jac(xb, yb):
        try:
            return compiled["jac"](xb, yb)
        except Exception:  # noqa: BLE001 - pfor has no converter for some ops (e.g. NCHW bias_add)
            if not use_pfor or compiled.get("fallback"):
                raise
            compiled["jac"], compiled["fallback"] = make_jac(False), True  # the while loop is exact too
            return compiled["jac"](xb, yb)

    def chunk(lo: int, hi: int):
        loss, jac_values = jac(nested.to_tensors(nested.cut(x, lo, hi)), tf.convert_to_tensor(y[lo:hi]))
        b = hi - lo
        rows = [
            np.zeros((b, int(np.prod(v.shape)))) if j is None else np.asarray(j, np.float64).reshape(b, -1)
            for v, j in zip(variables, jac_values)
        ]
        return loss, rows

    activations = activations_per_example(model, units, x) if use_pfor else 0
    return _grouped_grams(chunk, groups, nested.n_rows(x), activations, split)
