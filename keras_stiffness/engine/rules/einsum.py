"""EinsumDense: ``z = einsum(equation, x, W) + b``, for every equation Keras' EinsumDense accepts.

The equation's letters are classified once (input letters ``I``, kernel letters ``K``, output letters
``O``; the first input letter is the batch, ``...`` stands for as many fresh letters as the input has
unnamed axes):

- batch: ``I[0]``, which must also lead ``O`` and must not index the kernel;
- positions ``T = (I ∩ O) \\ K`` (without the batch): where the same weights are applied;
- contracted ``D = (I ∩ K) \\ O``: the input features of one position;
- output ``E = (K ∩ O) \\ I``: the output features of one position;
- shared ``H = I ∩ K ∩ O``: weights indexed by a letter of the input and the output too (a weight
  per head or per position, a diagonal);
- summed ``I \\ (K ∪ O)``: summed out of ``x`` before anything else.

Keras rejects kernel letters found in neither the input nor the output (``"the weight must be fully
specified"``), and output letters found in neither operand, so neither can reach this rule. A letter
repeated inside one operand takes that operand's diagonal: the input is reduced to its diagonal
first, and a kernel diagonal only receives gradient on the diagonal, so the Gram of the compact
gradient is the Gram of the whole one.

The per-example kernel gradient is ``J_n[h, d, e] = Σ_t x_n[t, h, d] δ_n[t, h, e]``, so its Gram is
``Σ_h positions_gram(x[:, :, h], δ[:, :, h])`` (the letters of each group flattened into one axis,
the index letters of :mod:`~keras_stiffness.engine.rules.base` plus ``h`` for the shared group). The
bias (``bias_axes ⊂ O``, broadcast over the rest of the output) gets ``δ`` summed over the output
elements each bias element was added to. Which ones is read off Keras' own ``ops.add`` applied to the
bias's element numbers: with the TensorFlow backend a bias that squeezes to one axis becomes a
``bias_add`` along the output's last (or second) axis whenever the sizes match, whatever
``bias_axes`` says, and the Gram follows what the model computes.
"""

from __future__ import annotations

import dataclasses
import re
import string
from typing import Dict, Optional, Tuple

import numpy as np

from keras_stiffness.engine.rules.base import (
    LayerCapture,
    Rule,
    concat_calls,
    lora_or_quantized,
    positions_gram,
    pre_activation_forward,
    vector_gram,
)

_EQUATION = re.compile(r"^([a-zA-Z.]+),([a-zA-Z]+)->([a-zA-Z.]+)$")
_LETTERS = re.compile(r"^[a-zA-Z]+$")


@dataclasses.dataclass(frozen=True)
class EinsumLetters:
    """The letters of an explicit (ellipsis-free) EinsumDense equation, classified.

    Attributes:
        inputs, kernel, output: The three operands' subscripts (ellipsis expanded).
        batch: The batch letter.
        positions: ``T``: in input and output, not in the kernel (batch excluded).
        contracted: ``D``: in input and kernel only.
        produced: ``E``: in kernel and output only.
        shared: ``H``: in input, kernel and output.
        summed: In the input only.
    """

    inputs: str
    kernel: str
    output: str
    batch: str
    positions: str
    contracted: str
    produced: str
    shared: str
    summed: str


def _unique(letters: str) -> str:
    return "".join(dict.fromkeys(letters))


def expand_ellipsis(equation: str, input_ndim: int) -> Tuple[str, str, str]:
    """``(inputs, kernel, output)`` subscripts with ``...`` replaced by fresh letters.

    Args:
        equation: An EinsumDense equation, e.g. ``"...b,bc->...c"``.
        input_ndim: Rank of the layer's input (batch axis included).

    Returns:
        The three subscripts without ellipsis.

    Raises:
        ValueError: The equation is not of the form ``I,K->O`` (ellipsis in input and output only),
            or its input subscripts do not fit ``input_ndim``.
    """
    match = _EQUATION.match(equation.replace(" ", ""))
    if (
        match is None
        or not all(_LETTERS.match(part.replace("...", "", 1)) for part in (match.group(1), match.group(3)))
        or match.group(1).count("...") != match.group(3).count("...")
    ):
        raise ValueError(
            f"Received equation={equation!r}; expected the EinsumDense form 'I,K->O' with an "
            "ellipsis, if any, in the input and the output only (e.g. 'abc,cd->abd', '...b,bc->...c')."
        )
    inputs, kernel, output = match.groups()
    named = len(inputs.replace("...", ""))
    if "..." not in inputs:
        if named != input_ndim:
            raise ValueError(
                f"Received an input of rank {input_ndim} for equation={equation!r}; expected rank {named}."
            )
        return inputs, kernel, output
    free = [c for c in string.ascii_letters if c not in inputs + kernel + output]
    extra = input_ndim - named
    if extra < 0 or extra > len(free):
        raise ValueError(
            f"Received an input of rank {input_ndim} for equation={equation!r}; expected at least rank {named}."
        )
    fill = "".join(free[:extra])
    return inputs.replace("...", fill), kernel, output.replace("...", fill)


def classify(inputs: str, kernel: str, output: str) -> EinsumLetters:
    """Classify the letters of an explicit equation (see the module docstring).

    Args:
        inputs, kernel, output: Subscripts without ellipsis; ``inputs[0]`` is the batch.

    Returns:
        The :class:`EinsumLetters`.

    Raises:
        ValueError: When the Gram rule cannot apply: the batch letter does not lead the output or
            indexes the kernel (examples would mix), a letter is repeated in the output, or a letter
            of the kernel or output is in no other operand.
    """
    where = f"Received equation '{inputs},{kernel}->{output}'"
    batch = inputs[0]
    if not output or output[0] != batch or batch in kernel or batch in inputs[1:]:
        raise ValueError(
            f"{where}; expected the batch letter {batch!r} to lead the output, once, and not to index the "
            "kernel (otherwise examples mix). Such layers use the exact jacobian fallback."
        )
    if len(set(output)) != len(output):
        raise ValueError(f"{where}; expected each output letter once.")
    i, k, o = set(inputs), set(kernel), set(output)
    stray = sorted((k - i - o) | (o - i - k))
    if stray:
        raise ValueError(
            f"{where}; expected every kernel and output letter in another operand, found {stray} in one "
            "only (Keras' EinsumDense rejects such equations too)."
        )

    def pick(keep) -> str:
        return "".join(c for c in _unique(inputs + kernel + output) if keep(c) and c != batch)

    return EinsumLetters(
        inputs=inputs,
        kernel=kernel,
        output=output,
        batch=batch,
        positions=pick(lambda c: c in i and c in o and c not in k),
        contracted=pick(lambda c: c in i and c in k and c not in o),
        produced=pick(lambda c: c in k and c in o and c not in i),
        shared=pick(lambda c: c in i and c in k and c in o),
        summed=pick(lambda c: c in i and c not in k and c not in o),
    )


def layer_letters(layer, input_ndim: Optional[int] = None) -> EinsumLetters:
    """The classified letters of ``layer.equation`` for an input of rank ``input_ndim``.

    ``input_ndim`` defaults to the rank the layer was built for (its ``input_spec``).
    """
    if input_ndim is None:
        spec = getattr(layer, "input_spec", None)
        input_ndim = getattr(spec, "ndim", None)
        if input_ndim is None:  # unbuilt: the smallest rank the equation allows
            first = layer.equation.split(",")[0]
            input_ndim = len(first.replace("...", "")) + ("..." in first)
    return classify(*expand_ellipsis(layer.equation, input_ndim))


def _grouped(value, source: str, groups: Tuple[str, ...], n: int, precision: str) -> np.ndarray:
    """``value`` with subscripts ``source`` as ``(n, |g1|, |g2|, ...)``: each group's letters flattened,
    letters absent from ``groups`` summed, repeated source letters reduced to their diagonal (float64
    first when ``precision`` asks for it)."""
    value = np.asarray(value)
    if precision == "float64":
        value = value.astype(np.float64, copy=False)
    target = source[0] + "".join(groups)
    out = np.einsum(f"{source}->{target}", value)
    sizes = dict(zip(target, out.shape))
    return out.reshape(n, *[int(np.prod([sizes[c] for c in g])) for g in groups])


def shared_positions_gram(a, d, route: Optional[str] = None, products="float32") -> np.ndarray:
    """``Σ_h positions_gram(a[:, :, h], d[:, :, h])``: the exact kernel Gram with a shared group ``h``.

    Args:
        a: ``(n, t, h, d)`` inputs per position and shared index.
        d: ``(n, t, h, e)`` output gradients likewise.
        route: Passed to :func:`~keras_stiffness.engine.rules.base.positions_gram` (``None``: cheaper).
        products: Precision and block of the products (see ``Products``).

    Returns:
        ``products.shape(n)`` float64.
    """
    h = a.shape[2]
    out = positions_gram(a[:, :, 0], d[:, :, 0], route=route, products=products)
    for k in range(1, h):
        out += positions_gram(a[:, :, k], d[:, :, k], route=route, products=products)
    return out


def bias_targets(bias_shape, output_shape) -> np.ndarray:
    """For each element of one example's output, the flat index of the bias element added to it.

    Found by adding the bias's element numbers to zeros with Keras' own ``ops.add``, as
    ``EinsumDense.call`` adds its bias, so every broadcast (and backend shortcut) is the model's.

    Args:
        bias_shape: The bias variable's shape.
        output_shape: The layer's output shape, batch axis included.

    Returns:
        ``(prod(output_shape[1:]),)`` int64.
    """
    from keras import ops

    size = int(np.prod(bias_shape))
    codes = np.arange(size, dtype=np.float64).reshape(tuple(bias_shape))
    added = ops.add(np.zeros((1, *output_shape[1:]), np.float64), codes)
    return np.asarray(added).reshape(-1).astype(np.int64)


def bias_gradients(bias_shape, grad: np.ndarray, precision: str) -> np.ndarray:
    """Per-example bias gradients ``(n, bias size)``: ``δ`` summed over the outputs each element reached."""
    import tensorflow as tf

    n = grad.shape[0]
    targets = bias_targets(bias_shape, grad.shape)
    size = int(np.prod(bias_shape))
    grad = grad.astype(np.float64) if precision == "float64" else grad
    if np.array_equal(targets, np.tile(np.arange(size), len(targets) // size)):  # the bias on the last axes
        return grad.reshape(n, -1, size).sum(axis=1)
    summed = tf.math.unsorted_segment_sum(tf.transpose(tf.reshape(grad, (n, -1))), targets, size)
    return tf.transpose(summed).numpy()


def einsum_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """Kernel: ``Σ_h`` of the positions Gram (factorized or materialized); bias: ``Σ`` of ``δ`` over
    the output letters it does not carry, then ``V Vᵀ`` (all calls of a shared layer summed)."""
    n, p = captured.n, captured.precision
    xs, ds, bias = [], [], 0.0
    for call in captured.calls:
        x = np.asarray(call.inputs)
        g = np.asarray(call.grads["out"])
        s = layer_letters(layer, x.ndim)
        xs.append(_grouped(x, s.inputs, (s.positions, s.shared, s.contracted), n, p))
        ds.append(_grouped(g, s.output, (s.positions, s.shared, s.produced), n, p))
        if layer.bias is not None:
            bias = bias + bias_gradients(layer.bias.shape, g, p)
    out = {layer.kernel.name: shared_positions_gram(concat_calls(xs), concat_calls(ds), products=captured.products)}
    if layer.bias is not None:
        out[layer.bias.name] = vector_gram(bias, captured.products)
    return out


def einsum_unsupported(layer) -> Optional[str]:
    """LoRA, quantization, or an equation whose batch letter mixes examples: the exact fallback."""
    reason = lora_or_quantized(layer)
    if reason:
        return reason
    try:
        layer_letters(layer)
    except ValueError as exc:
        return str(exc)
    return None


EINSUM = Rule("einsum_dense", gram=einsum_gram, forward=pre_activation_forward, unsupported=einsum_unsupported)
