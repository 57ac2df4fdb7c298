"""Embedding: row ``v`` of the table gets ``Σ_t [id_t = v] δ_t``; pairs of positions sharing a token id
contribute ``δ_it·δ_js`` to ``G_ij``."""

from __future__ import annotations

from typing import Dict

import numpy as np

from keras_stiffness.engine.memory import BLOCK_ELEMENTS
from keras_stiffness.engine.rules.base import (
    LayerCapture,
    Rule,
    compute_dtype,
    concat_calls,
    lora_or_quantized,
)


def token_gram(ids: np.ndarray, d, precision: str = "float32") -> np.ndarray:
    """``G_ij = Σ_{t,s} [ids_it = ids_js] (δ_it·δ_js)`` as float64, in row blocks.

    Args:
        ids: ``(n, t)`` integer token ids.
        d: ``(n, t, e)`` output gradients.
        precision: Product precision (the sum over position pairs is float64).
    """
    import tensorflow as tf

    n, t = ids.shape
    flat_ids = tf.convert_to_tensor(ids.reshape(-1))
    dt = compute_dtype(precision, d)
    flat_d = tf.reshape(tf.cast(tf.convert_to_tensor(d), dt), (n * t, -1))
    out = np.empty((n, n))
    step = max(1, min(n, BLOCK_ELEMENTS // max(1, 2 * n * t * t)))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        prod = tf.linalg.matmul(flat_d[lo * t : hi * t], flat_d, transpose_b=True)
        same = tf.cast(tf.equal(flat_ids[lo * t : hi * t, None], flat_ids[None, :]), dt)
        prod = tf.cast(tf.reshape(prod * same, (hi - lo, t, n, t)), tf.float64)
        out[lo:hi] = tf.reduce_sum(prod, axis=(1, 3)).numpy()
    return out


def embedding_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """Embedding table Gram over all calls (a shared embedding adds its cross terms)."""
    n = captured.n
    ids = concat_calls([np.asarray(c.inputs).astype(np.int64).reshape(n, -1, 1) for c in captured.calls])
    d = concat_calls([np.asarray(c.grads["out"]).reshape(n, -1, layer.output_dim) for c in captured.calls])
    return {layer.embeddings.name: token_gram(ids[..., 0], d, captured.precision)}


EMBEDDING = Rule("embedding", gram=embedding_gram, unsupported=lora_or_quantized)
