"""Convolutions of any rank: Conv1D/2D/3D (with groups), DepthwiseConv, SeparableConv.

One rank-generic implementation; the thin bindings in the registry map each Keras class to it. The
per-example kernel gradient of a convolution is ``J_n = Σ_t p_nt ⊗ δ_nt`` where ``p_nt`` is the input
patch seen by output position ``t`` (kernel taps × input channels, in the kernel's own order), so the
Gram is :func:`~keras_stiffness.engine.rules.base.positions_gram` over patches; per group for grouped
convolutions.
"""

from __future__ import annotations

from typing import Dict

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


def channels_last(x: np.ndarray, data_format: str) -> np.ndarray:
    """Move the channel axis last when the layer is ``channels_first``."""
    x = np.asarray(x)
    if data_format == "channels_first":
        return np.moveaxis(x, 1, -1)
    return x


#: Patches up to this width (taps × channels) come from a convolution with a one-hot kernel, which
#: is about 10× faster than ``tf.image.extract_patches`` for few channels (slower for many).
IDENTITY_CONV_MAX_WIDTH = 64


def extract_patches(x: np.ndarray, kernel_size, strides, dilation, padding: str):
    """Input patches of a convolution, ``(n, t, k·c)``, taps-major like a flattened kernel.

    Args:
        x: ``(n, *spatial, c)`` channels-last inputs.
        kernel_size, strides, dilation: Per spatial axis.
        padding: ``"valid"``, ``"same"`` or ``"causal"`` (1D, left padding).

    Returns:
        ``tf.Tensor`` of patches in the input's dtype; position ``t`` runs over output positions in
        row-major order.
    """
    import tensorflow as tf

    rank = x.ndim - 2
    x = tf.convert_to_tensor(x)
    padding = padding.lower()
    if padding == "causal":
        left = dilation[0] * (kernel_size[0] - 1)
        x = tf.pad(x, [[0, 0], [left, 0], [0, 0]])
        padding = "valid"
    if rank == 1:
        x = x[:, None]
        kernel_size, strides, dilation = (1, *kernel_size), (1, *strides), (1, *dilation)
        rank = 2
    width = int(np.prod(kernel_size)) * x.shape[-1]
    if rank == 2 and width > IDENTITY_CONV_MAX_WIDTH:
        p = tf.image.extract_patches(
            x,
            sizes=[1, *kernel_size, 1],
            strides=[1, *strides, 1],
            rates=[1, *dilation, 1],
            padding=padding.upper(),
        )
    else:
        # Any rank: convolve with a one-hot kernel whose output channel o copies tap/channel o.
        c = x.shape[-1]
        eye = tf.reshape(tf.eye(width, dtype=x.dtype), (*kernel_size, c, width))
        p = tf.nn.convolution(x, eye, strides=list(strides), padding=padding.upper(), dilations=list(dilation))
    return tf.reshape(p, (p.shape[0], -1, p.shape[-1]))


def _patches(layer, inputs: np.ndarray):
    x = channels_last(inputs, layer.data_format)
    return extract_patches(x, layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding)


def _grads(layer, grad: np.ndarray, n: int) -> np.ndarray:
    g = channels_last(grad, layer.data_format)
    return g.reshape(n, -1, g.shape[-1])


def bias_gradients(layer, grad: np.ndarray, n: int) -> np.ndarray:
    """Per-example bias gradients ``(n, filters)``, summed over the axes the bias was broadcast along.

    Keras' TensorFlow ``ops.add`` turns a bias add into ``tf.nn.bias_add(..., "NHWC")`` whenever the
    output's LAST axis has the bias's size, even for a ``channels_first`` output: the model then adds
    the bias along its last spatial axis. The gradient follows what the model computes.
    """
    g = np.asarray(grad)
    size = int(np.prod(layer.bias.shape))
    if layer.data_format == "channels_first" and g.shape[-1] == size:
        return g.reshape(n, -1, size).sum(axis=1)
    return _grads(layer, g, n).sum(axis=1)


def conv_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """Conv1D/2D/3D, grouped or not: kernel Gram summed over groups; bias ``(Σ_t δ)(Σ_s δ)ᵀ``."""
    n = captured.n
    p = concat_calls([_patches(layer, c.inputs) for c in captured.calls])
    d = concat_calls([_grads(layer, c.grads["out"], n) for c in captured.calls])
    taps = int(np.prod(layer.kernel_size))
    groups = getattr(layer, "groups", 1) or 1
    if groups == 1:
        kernel = positions_gram(p, d, products=captured.products)
    else:
        cin = p.shape[-1] // taps
        p = np.asarray(p).reshape(n, p.shape[1], taps, cin)
        gin, gout = cin // groups, d.shape[-1] // groups
        kernel = np.zeros(captured.products.shape(n))
        for g in range(groups):
            pg = p[..., g * gin : (g + 1) * gin].reshape(n, p.shape[1], taps * gin)
            kernel += positions_gram(pg, d[..., g * gout : (g + 1) * gout], products=captured.products)
    out = {layer.kernel.name: kernel}
    if layer.use_bias:
        bias = sum(bias_gradients(layer, c.grads["out"], n) for c in captured.calls)
        out[layer.bias.name] = vector_gram(bias, captured.products)
    return out


def _depthwise_jacobian(layer, patches: np.ndarray, grads: np.ndarray, n: int) -> np.ndarray:
    """Per-example depthwise kernel gradients ``(n, k·c·m)`` from patches and output gradients."""
    taps = int(np.prod(layer.kernel_size))
    t = patches.shape[1]
    p = np.asarray(patches).reshape(n, t, taps, -1).astype(np.float64)
    c = p.shape[-1]
    g = grads.reshape(n, t, c, -1).astype(np.float64)
    return np.einsum("ntkc,ntcm->nkcm", p, g).reshape(n, -1)


def depthwise_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """DepthwiseConv1D/2D: each input channel has its own ``k × m`` kernel."""
    n = captured.n
    jac = 0.0
    bias = 0.0
    for call in captured.calls:
        d = _grads(layer, call.grads["out"], n)
        jac = jac + _depthwise_jacobian(layer, _patches(layer, call.inputs), d, n)
        if layer.use_bias:
            bias = bias + bias_gradients(layer, call.grads["out"], n)
    out = {layer.kernel.name: vector_gram(jac, captured.products)}
    if layer.use_bias:
        out[layer.bias.name] = vector_gram(bias, captured.products)
    return out


def separable_forward(layer, call, args, kwargs, tap):
    """SeparableConv as depthwise then pointwise, with a tap on each (pre-activation at the end)."""
    from keras import ops

    inputs = args[0] if args else kwargs["inputs"]
    mid = ops.depthwise_conv(
        inputs,
        layer.depthwise_kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    mid = tap("mid", mid)
    out = ops.conv(mid, layer.pointwise_kernel, strides=1, padding="valid", data_format=layer.data_format)
    if layer.use_bias:
        shape = (1,) * (layer.rank + 1) + (layer.filters,)
        if layer.data_format == "channels_first":
            shape = (1, layer.filters) + (1,) * layer.rank
        out = ops.add(out, ops.reshape(layer.bias, shape))
    out = tap("out", out)
    return out if layer.activation is None else layer.activation(out)


def separable_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """SeparableConv1D/2D: depthwise kernel from the tap between the two stages, pointwise as 1×1."""
    n = captured.n
    jac = 0.0
    mids, douts = [], []
    for call in captured.calls:
        dmid = _grads(layer, call.grads["mid"], n)
        jac = jac + _depthwise_jacobian(layer, _patches(layer, call.inputs), dmid, n)
        mids.append(_grads(layer, call.values["mid"], n))
        douts.append(_grads(layer, call.grads["out"], n))
    d = concat_calls(douts)
    out = {
        layer.depthwise_kernel.name: vector_gram(jac, captured.products),
        layer.pointwise_kernel.name: positions_gram(concat_calls(mids), d, products=captured.products),
    }
    if layer.use_bias:
        bias = sum(bias_gradients(layer, c.grads["out"], n) for c in captured.calls)
        out[layer.bias.name] = vector_gram(bias, captured.products)
    return out


CONV = Rule("conv", gram=conv_gram, forward=pre_activation_forward, unsupported=lora_or_quantized)
DEPTHWISE = Rule("depthwise_conv", gram=depthwise_gram, forward=pre_activation_forward, unsupported=lora_or_quantized)
SEPARABLE = Rule("separable_conv", gram=separable_gram, forward=separable_forward, unsupported=lora_or_quantized)
