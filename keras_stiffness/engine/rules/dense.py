"""Dense: ``z = a W + b`` at one or more positions (Dense on sequences, shared Dense layers)."""

from __future__ import annotations

from typing import Any, Dict

from keras_stiffness.engine.memory import BLOCK_ELEMENTS
from keras_stiffness.engine.rules.base import (
    LayerCapture,
    Rule,
    as_positions,
    concat_calls,
    lora_or_quantized,
    positions_gram,
    pre_activation_forward,
    product_gram,
    self_product,
    vector_gram,
)


def dense_gram(layer, captured: LayerCapture) -> Dict[str, Any]:
    """Kernel: ``Σ_{t,s}(a·a)(δ·δ)`` (``(AAᵀ)⊙(ΔΔᵀ)`` for one position); bias: ``(Σ_t δ)(Σ_s δ)ᵀ``."""
    n, p = captured.n, captured.products
    a = concat_calls([as_positions(c.inputs, n) for c in captured.calls])
    d = concat_calls([as_positions(c.grads["out"], n) for c in captured.calls])
    if a.shape[1] == 1 and n * n <= BLOCK_ELEMENTS:  # one position: Δ Δᵀ is also the bias Gram
        dd = self_product(d[:, 0], p)  # tensors: the engine accumulates the layer's blocks in float64
        out = {layer.kernel.name: self_product(a[:, 0], p) * dd}
        if layer.bias is not None:
            out[layer.bias.name] = dd
        return out
    if a.shape[1] == 1:  # large N: float64 row blocks on the host, accumulated in place
        dd = vector_gram(d[:, 0], p)
        out = {layer.kernel.name: product_gram(a[:, 0], d[:, 0], p)}
        if layer.bias is not None:
            out[layer.bias.name] = dd
        return out
    out = {layer.kernel.name: positions_gram(a, d, products=p)}
    if layer.bias is not None:
        out[layer.bias.name] = vector_gram(d.sum(axis=1), p)
    return out


#: Traceable on one position per example (the paper's MLPs); on sequences its products are host
#: row blocks, so that capture stays eager.
DENSE = Rule("dense", gram=dense_gram, forward=pre_activation_forward, unsupported=lora_or_quantized, traceable=True)
