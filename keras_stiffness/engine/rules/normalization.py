"""BatchNormalization (inference mode: moving statistics) and LayerNormalization.

Both compute ``y = γ ⊙ x̂ + β`` with ``x̂`` independent of ``γ`` and ``β``, so per example
``∂L/∂γ = Σ_t x̂_t ⊙ δ_t`` and ``∂L/∂β = Σ_t δ_t``. ``x̂`` is obtained by running the layer itself with
``γ = 1`` and ``β = 0`` substituted (a Keras ``StatelessScope``), so every variant the layer supports
(axes, epsilon, RMS scaling) is reproduced by the layer's own code.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from keras_stiffness.engine.rules.base import LayerCapture, Rule, vector_gram


def _normalized(layer, call) -> np.ndarray:
    import keras

    mapping = []
    if getattr(layer, "gamma", None) is not None:
        mapping.append((layer.gamma, keras.ops.ones(layer.gamma.shape, layer.gamma.dtype)))
    if getattr(layer, "beta", None) is not None:
        mapping.append((layer.beta, keras.ops.zeros(layer.beta.shape, layer.beta.dtype)))
    kwargs = dict(call.kwargs)
    if "training" in kwargs:
        kwargs["training"] = False
    with keras.StatelessScope(state_mapping=mapping):
        xhat = type(layer).call(layer, *call.args, **kwargs)
    return np.asarray(xhat)


def _param_axes(layer, ndim: int) -> List[int]:
    axis = layer.axis
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return sorted(a % ndim for a in axes)


def _per_example(layer, x: np.ndarray, n: int) -> np.ndarray:
    """Sum over positions (all non-parameter, non-probe axes), keeping parameter axes flattened."""
    axes = _param_axes(layer, x.ndim)
    others = [a for a in range(1, x.ndim) if a not in axes]
    x = np.transpose(x, [0, *others, *axes])
    return x.reshape(n, -1, int(np.prod([x.shape[x.ndim - len(axes) + k] for k in range(len(axes))])))


def normalization_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """γ from ``Σ_t x̂ ⊙ δ``, β from ``Σ_t δ`` (over all calls)."""
    n = captured.n
    gamma = getattr(layer, "gamma", None)
    beta = getattr(layer, "beta", None)
    jg, jb = 0.0, 0.0
    for call in captured.calls:
        d = np.asarray(call.grads["out"], dtype=np.float64)
        dp = _per_example(layer, d, n)
        if gamma is not None and gamma.trainable:
            xhat = _per_example(layer, _normalized(layer, call).astype(np.float64), n)
            jg = jg + (xhat * dp).sum(axis=1)
        jb = jb + dp.sum(axis=1)
    out = {}
    if gamma is not None and gamma.trainable:
        out[gamma.name] = vector_gram(jg, captured.products)
    if beta is not None and beta.trainable:
        out[beta.name] = vector_gram(jb, captured.products)
    return out


NORMALIZATION = Rule("normalization", gram=normalization_gram)
