"""Embedding: row ``v`` of the table gets ``Σ_t [id_t = v] δ_t``; pairs of positions sharing a token id
contribute ``δ_it·δ_js`` to ``G_ij``."""

from __future__ import annotations

from typing import Dict

import numpy as np

from keras_stiffness.engine.memory import BLOCK_ELEMENTS
from keras_stiffness.engine.rules.base import (
    LayerCapture,
    Rule,
    as_products,
    compute_dtype,
    concat_calls,
    lora_or_quantized,
)

#: Examples sharing one token id from which that id's block is one matrix product (below: gathered
#: pairs of rows, vectorized over all such ids).
DENSE_GROUP = 32


def token_gram(ids: np.ndarray, d, products="float32") -> np.ndarray:
    """``G_ij = Σ_{t,s} [ids_it = ids_js] (δ_it·δ_js)`` as float64, sparse in the token ids.

    Row ``v`` of the per-example gradient is ``S_iv = Σ_{t: ids_it = v} δ_it``, so
    ``G_ij = Σ_v S_iv·S_jv`` over the ids both examples contain: a segment sum, then for each id the
    products between the examples containing it. Cost ``Σ_v n_v² e`` (``n_v`` examples contain ``v``),
    at most ``N² t e``, against ``N² t² e`` for all position pairs.

    Args:
        ids: ``(n, t)`` integer token ids.
        d: ``(n, t, e)`` output gradients.
        products: Precision and block of the products (the sums over ids are float64); with a split,
            only the pairs of a row of the first block and a row of the second are formed.
    """
    import tensorflow as tf

    products = as_products(products)
    ids = np.asarray(ids).astype(np.int64)
    n, t = ids.shape
    dt = compute_dtype(products, d)
    flat_d = tf.reshape(tf.cast(tf.convert_to_tensor(d), dt), (n * t, -1))
    # One row of S per (id, example) present, sorted by id then example.
    keys = (ids - ids.min()) * n + np.arange(n)[:, None]
    pairs, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    s = tf.math.unsorted_segment_sum(flat_d, tf.convert_to_tensor(inverse.reshape(-1)), len(pairs))
    token, example = pairs // n, pairs % n
    starts = np.flatnonzero(np.r_[True, token[1:] != token[:-1]])
    counts = np.diff(np.r_[starts, len(pairs)])
    split = 0 if products.split is None else products.split
    out = np.zeros(products.shape(n))
    big = counts >= DENSE_GROUP
    for lo, c in zip(starts[big], counts[big]):
        rows = example[lo : lo + c]
        if products.split is None:
            left = right = np.arange(c)
        else:
            left, right = np.flatnonzero(rows < split), np.flatnonzero(rows >= split)
        block = tf.linalg.matmul(tf.gather(s, lo + left), tf.gather(s, lo + right), transpose_b=True)
        out[np.ix_(rows[left], rows[right] - split)] += tf.cast(block, tf.float64).numpy()
    _small_groups(out, s, example, starts[~big], counts[~big], products.split)
    return out


def _small_groups(out: np.ndarray, s, example: np.ndarray, starts: np.ndarray, counts: np.ndarray, split=None) -> None:
    """Add ``S_p·S_q`` for every pair of rows ``p, q`` of the same id into ``out[example_p, example_q]``
    (with a split: only ``example_p`` in the first block and ``example_q`` in the second), in chunks of
    whole groups of at most ``BLOCK_ELEMENTS`` gathered elements."""
    import tensorflow as tf

    if not len(starts):
        return
    rows, cols = out.shape
    offset = 0 if split is None else split
    sq = counts * counts
    ends = np.cumsum(sq)
    step = max(1, BLOCK_ELEMENTS // max(1, 2 * int(s.shape[1])))
    flat = np.zeros(rows * cols)
    lo = 0
    while lo < len(starts):
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - sq[lo] + step, side="right")))
        c, first, size = counts[lo:hi], starts[lo:hi], sq[lo:hi]
        k = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        rep = np.repeat(c, size)
        p = np.repeat(first, size) + k // rep
        q = np.repeat(first, size) + k % rep
        if split is not None:
            keep = (example[p] < split) & (example[q] >= split)
            p, q = p[keep], q[keep]
        if len(p):
            dots = tf.cast(tf.reduce_sum(tf.gather(s, p) * tf.gather(s, q), axis=1), tf.float64).numpy()
            flat += np.bincount(example[p] * cols + example[q] - offset, weights=dots, minlength=rows * cols)
        lo = hi
    out += flat.reshape(rows, cols)


def embedding_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """Embedding table Gram over all calls (a shared embedding adds its cross terms)."""
    n = captured.n
    ids = concat_calls([np.asarray(c.inputs).astype(np.int64).reshape(n, -1, 1) for c in captured.calls])
    d = concat_calls([np.asarray(c.grads["out"]).reshape(n, -1, layer.output_dim) for c in captured.calls])
    return {layer.embeddings.name: token_gram(ids[..., 0], d, captured.products)}


EMBEDDING = Rule("embedding", gram=embedding_gram, unsupported=lora_or_quantized)
