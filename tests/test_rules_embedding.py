"""The Embedding rule's sparse token Gram against the dense per-example gradients, on every path:
ids shared by many examples (one product per id), by few (gathered pairs, in one or many chunks)."""

import numpy as np
import pytest

from keras_stiffness.engine.rules import embedding


def dense_gram(ids, d):
    """``J Jᵀ`` from the per-example table gradients, formed row by row in float64."""
    n, vocab = ids.shape[0], int(ids.max()) + 1
    j = np.zeros((n, vocab, d.shape[2]))
    for i in range(n):
        np.add.at(j[i], ids[i], d[i].astype(np.float64))
    j = j.reshape(n, -1)
    return j @ j.T


@pytest.mark.parametrize(
    "n,t,vocab,block",
    [(7, 6, 11, None), (40, 20, 1000, None), (40, 20, 1000, 64), (64, 16, 40, 96), (300, 4, 2, None)],
)
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_token_gram_is_exact(monkeypatch, n, t, vocab, block, precision):
    if block is not None:  # many chunks of gathered pairs
        monkeypatch.setattr(embedding, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(n + t)
    ids = rng.integers(0, vocab, (n, t))
    ids[:, 1] = ids[:, 0]  # repeats inside each sequence
    ids[:, -1] = 0  # an id present in every example
    d = rng.standard_normal((n, t, 3)).astype(np.float32)
    expected = dense_gram(ids, d)
    got = embedding.token_gram(ids, d, precision)
    tol = 1e-6 if precision == "float32" else 1e-12
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < tol
