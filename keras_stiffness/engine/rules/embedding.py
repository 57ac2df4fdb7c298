"""Embedding: row ``v`` of the table gets ``Σ_t [id_t = v] δ_t``; pairs of positions sharing a token id
contribute ``δ_it·δ_js`` to ``G_ij``."""

from __future__ import annotations

from typing import Dict

import numpy as np

from keras_stiffness.engine.memory import BLOCK_ELEMENTS
from keras_stiffness.engine.rules.base import (
    LayerCapture,
    Rule,
    concat_calls,
    lora_or_quantized,
)


def token_gram(ids: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``G_ij = Σ_{t,s} [ids_it = ids_js] (δ_it·δ_js)`` in float64, in row blocks.

    Args:
        ids: ``(n, t)`` integer token ids.
        d: ``(n, t, e)`` output gradients.
    """
    n, t = ids.shape
    flat_ids = ids.reshape(-1)
    flat_d = np.asarray(d, dtype=np.float64).reshape(n * t, -1)
    out = np.empty((n, n))
    step = max(1, min(n, BLOCK_ELEMENTS // max(1, 2 * n * t * t)))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        rows = slice(lo * t, hi * t)
        prod = flat_d[rows] @ flat_d.T
        prod *= flat_ids[rows, None] == flat_ids[None, :]
        out[lo:hi] = prod.reshape(hi - lo, t, n, t).sum(axis=(1, 3))
    return out


def embedding_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """Embedding table Gram over all calls (a shared embedding adds its cross terms)."""
    n = captured.n
    ids = concat_calls([np.asarray(c.inputs).astype(np.int64).reshape(n, -1, 1) for c in captured.calls])
    d = concat_calls([np.asarray(c.grads["out"]).reshape(n, -1, layer.output_dim) for c in captured.calls])
    return {layer.embeddings.name: token_gram(ids[..., 0], d)}


EMBEDDING = Rule("embedding", gram=embedding_gram, unsupported=lora_or_quantized)
