"""Gram blocks against the whole matrix, on every architecture of ``engine_cases``.

The blocked engine forms only the pairs ``I <= J`` and has every rule form cross blocks of two
stacked captures; these tests check that, for block sizes that divide ``N`` and ones that do not
(down to a block of 1), the blocks equal the naive per-example reference, and that shares of the
pairs over several workers cover each pair exactly once.
"""

import functools

import numpy as np
import pytest
from engine_cases import case_named
from reference import reference_gram, relative_error

from keras_stiffness.engine.api import gradient_gram, gram_blocks
from keras_stiffness.engine.blocks import BlockPlan, plan_blocks

pytestmark = pytest.mark.filterwarnings("ignore")


@functools.lru_cache(maxsize=None)
def problem(name):
    case = case_named(name)
    model, x, y = case.make()
    return model, x, y, case.loss, reference_gram(model, x, y, case.loss)


def assemble(blocks, n):
    """The whole matrix (total and per layer) from a stream of upper blocks."""
    total = np.full((n, n), np.nan)
    per_layer = {}
    for block in blocks:
        for name, g in list(block.per_layer.items()) + [("<total>", block.total)]:
            out = total if name == "<total>" else per_layer.setdefault(name, np.full((n, n), np.nan))
            out[block.rows, block.cols] = g
            out[block.cols, block.rows] = g.T
    return total, per_layer


#: One case per rule and per kind of unit (shared layers, tied variables, fallbacks, several inputs),
#: so every rule's cross block is checked; the whole list runs through ``test_engine_exactness``.
BLOCK_CASES = [
    "mlp_logits",
    "two_inputs_dict",
    "shared_dense",
    "frozen_kernel_and_bias",
    "tied_weights",
    "lora",
    "dense_sequence",
    "conv1d",
    "conv2d_channels_first_bias_on_last_axis",
    "depthwise2d",
    "separable2d",
    "embedding",
    "batchnorm_conv",
    "layernorm",
    "gru_reset_before",
    "bidirectional_lstm",
    "masked_gru",
    "shared_gru",
    "rnn_generic_cell",
    "einsum_dense",
    "cross_attention",
    "custom_weight",
]
#: Cases on the whole-model jacobian route too (slow: one jacobian per block pair).
JACOBIAN_CASES = ["mlp_logits", "conv1d", "tied_weights"]


@pytest.mark.parametrize(
    "name,method", [(c, "structured") for c in BLOCK_CASES] + [(c, "jacobian") for c in JACOBIAN_CASES]
)
def test_blocks_match_reference(name, method):
    """Block size 3 (rarely divides N) and the cross blocks of every rule, against the per-example loop."""
    model, x, y, loss, ref = problem(name)
    n = len(y)
    blocks = gram_blocks(model, x, y, loss=loss, method=method, block_size=3)
    norms = blocks.norms()
    total, per_layer = assemble(blocks, n)
    assert not np.isnan(total).any()
    assert relative_error(total, ref.total) < 1e-5
    np.testing.assert_allclose(norms.total, np.diagonal(total), rtol=1e-12)
    np.testing.assert_allclose(norms.losses, ref.losses, rtol=1e-5, atol=1e-7)
    scale = np.linalg.norm(ref.total)
    for layer_name, block in per_layer.items():
        assert np.linalg.norm(block - ref.block(layer_name)) / scale < 1e-5, layer_name
        np.testing.assert_allclose(norms.per_layer[layer_name], np.diagonal(block), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("block_size", [1, 5, None])
@pytest.mark.parametrize("name", ["mlp_logits", "conv2d", "transformer_encoder", "masked_gru"])
def test_gradient_gram_is_the_same_for_every_block_size(name, block_size):
    model, x, y, loss, _ = problem(name)
    whole = gradient_gram(model, x, y, loss=loss)
    blocked = gradient_gram(model, x, y, loss=loss, block_size=block_size)
    np.testing.assert_allclose(blocked.total, whole.total, rtol=1e-6, atol=1e-6 * np.abs(whole.total).max())
    assert list(blocked.per_layer) == list(whole.per_layer)
    np.testing.assert_allclose(blocked.total, blocked.total.T, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_shares_cover_every_pair_once(workers):
    model, x, y, loss, ref = problem("mlp_logits")
    n = len(y)
    seen = {}
    losses = np.zeros(n)
    for w in range(workers):
        blocks = gram_blocks(model, x, y, loss=loss, block_size=2, worker=w, workers=workers)
        part = blocks.norms()
        losses += part.losses
        for block in blocks:
            assert (block.i, block.j) not in seen
            seen[(block.i, block.j)] = block.total
    assert sorted(seen) == sorted(BlockPlan(n, 2, 2**30, 0, False).pairs)
    np.testing.assert_allclose(losses, ref.losses, rtol=1e-5)


def test_progress_counts_every_block_formed():
    model, x, y, loss, _ = problem("mlp_logits")
    calls = []
    blocks = gram_blocks(model, x, y, loss=loss, block_size=3, progress=lambda done, total: calls.append((done, total)))
    list(blocks)
    total = blocks.total_steps
    assert calls == [(k, total) for k in range(0, total + 1)]


def test_plan_respects_the_budget_and_caches_what_fits():
    small = plan_blocks(100_000, probe_bytes=40_000, layers=5, memory_budget="256MiB")
    large = plan_blocks(100_000, probe_bytes=40_000, layers=5, memory_budget="8GiB")
    assert small.block_size < large.block_size
    assert small.cached_blocks < len(small.bounds)  # 4 GB of captures cannot be cached in 256 MiB
    assert large.cached_blocks == len(large.bounds)
    per_pair = 4 * small.block_size * 40_000 + 8 * small.block_size**2 * (5 + 1 + 12)
    assert per_pair <= 0.5 * 2**28


def test_plan_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="raise memory_budget"):
        plan_blocks(10, probe_bytes=2**40, layers=1, memory_budget="16MiB")
    with pytest.raises(ValueError, match="0 <= worker < workers"):
        plan_blocks(10, probe_bytes=10, layers=1, worker=2, workers=2)
    with pytest.raises(ValueError, match="expected bytes"):
        plan_blocks(10, probe_bytes=10, layers=1, memory_budget="2 parsecs")


def test_captures_beyond_the_cache_are_spilled_and_read_back_exactly(monkeypatch):
    """A budget too small to cache every capture: the others go to a temporary file and come back
    unchanged (the blocks equal the all-cached ones), and the file is removed at the end."""
    import os

    from keras_stiffness.engine import blocks as blocks_module

    model, x, y, loss, ref = problem("conv1d")
    n = len(y)
    plan = blocks_module.plan_blocks(n, probe_bytes=1, layers=1, block_size=2)
    cached_all = gram_blocks(model, x, y, loss=loss, block_size=2)
    spilling = gram_blocks(model, x, y, loss=loss, block_size=2)
    spilling.plan = blocks_module.BlockPlan(n, 2, plan.memory_budget, 1, False)  # cache one block only
    spilling.norms()
    spill_dir = spilling._spill_dir
    assert spill_dir is not None and len(os.listdir(spill_dir)) == len(plan.bounds) - 1
    total, _ = assemble(spilling, n)
    expected, _ = assemble(cached_all, n)
    np.testing.assert_array_equal(total, expected)
    assert not os.path.exists(spill_dir)
