"""The Gram matrix as blocks ``(I, J)`` of probes, in bounded memory: the plan and the block stream.

The probes are cut into blocks of ``b``. The Gram matrix is symmetric, so only the block pairs
``I <= J`` are formed: the diagonal blocks first (they give every probe's gradient norm, which the
cosines need), then the off-diagonal ones, row by row. A pair ``(I, J)`` with ``I ≠ J`` stacks the
two blocks' captures and has every rule form just the cross block (``rules.base.Products``).

Memory is set by a budget in bytes (:func:`plan_blocks`): the block size so that one pair's captures,
products and summary temporaries take at most half of it; captures of as many blocks as the rest
holds are kept in memory, the others are spilled to a temporary file when first captured and read
back when a pair needs them. ``bench/scale_bench.py`` measured the choice: reading a spilled capture
back is about 3× cheaper than recomputing it (one forward and backward pass of ``b`` probes), and
spilling it once costs about one recomputation, for the paper's MLP and for ResNet50V2 alike.

Work can be shared: worker ``w`` of ``W`` forms the pairs ``p`` (in the order above) with
``p mod W = w``, and on one worker the pairs can be spread over devices.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from keras_stiffness.engine.memory import (
    BLOCK_ELEMENTS,
    PAIR_SHARE,
    PAIR_TEMPORARIES,
    default_memory_budget,
)
from keras_stiffness.validation import check_int, check_memory_budget


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """How a Gram matrix of ``n`` probes is cut into blocks and shared.

    Attributes:
        n: Number of probes.
        block_size: Probes per block ``b`` (the last block may be shorter).
        memory_budget: The budget in bytes the plan was made for.
        cached_blocks: Captures kept in memory (the first ones); the others are spilled to a temporary
            file and read back per pair.
        buffer_diagonal: Whether diagonal blocks are kept from the norms pass to the pairs pass.
        worker: This worker's index.
        workers: Number of workers sharing the pairs.
        block_elements: Largest product temporary the rules may allocate, in elements.

    Example:
        >>> plan = BlockPlan(n=5, block_size=2, memory_budget=2**30, cached_blocks=3, buffer_diagonal=True)
        >>> plan.bounds, plan.pairs
        ([(0, 2), (2, 4), (4, 5)], [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)])
        >>> BlockPlan(5, 2, 2**30, 3, True, worker=1, workers=2).my_pairs
        [(1, 1), (0, 1), (1, 2)]
    """

    n: int
    block_size: int
    memory_budget: int
    cached_blocks: int
    buffer_diagonal: bool
    worker: int = 0
    workers: int = 1
    block_elements: int = BLOCK_ELEMENTS

    @property
    def bounds(self) -> List[Tuple[int, int]]:
        """``(lo, hi)`` probe range of every block."""
        return [(lo, min(self.n, lo + self.block_size)) for lo in range(0, self.n, self.block_size)]

    @property
    def pairs(self) -> List[Tuple[int, int]]:
        """Every block pair ``(i, j)``, ``i <= j``: diagonal ones first, then row by row."""
        k = len(self.bounds)
        return [(i, i) for i in range(k)] + [(i, j) for i in range(k) for j in range(i + 1, k)]

    @property
    def my_pairs(self) -> List[Tuple[int, int]]:
        """The pairs this worker forms: pair number ``p`` goes to worker ``p mod workers``."""
        return [pair for p, pair in enumerate(self.pairs) if p % self.workers == self.worker]

    def to_dict(self) -> dict:
        """What a measurement records about its blocks (JSON-ready).

        Example:
            >>> BlockPlan(10, 4, 2**30, 3, True).to_dict()["block_pairs"]
            6
        """
        return {
            "memory_budget": int(self.memory_budget),
            "block_size": int(self.block_size),
            "blocks": len(self.bounds),
            "block_pairs": len(self.pairs),
            "worker": int(self.worker),
            "workers": int(self.workers),
            "worker_pairs": len(self.my_pairs),
            "cached_blocks": int(self.cached_blocks),
            "buffer_diagonal": bool(self.buffer_diagonal),
        }


def pair_bytes(b: int, probe_bytes: int, blocks_per_pair: int) -> int:
    """Bytes one block pair of ``b`` probes needs: two captures and their stacked copy, and
    ``blocks_per_pair`` float64 ``(b, b)`` blocks (per layer, total, temporaries)."""
    return 4 * b * probe_bytes + 8 * b * b * blocks_per_pair


def plan_blocks(
    n: int,
    *,
    probe_bytes: int,
    layers: int,
    memory_budget=None,
    block_size: Optional[int] = None,
    worker: int = 0,
    workers: int = 1,
    extra_blocks: int = 0,
) -> BlockPlan:
    """Choose the block size and what is cached, within ``memory_budget``.

    Args:
        n: Number of probes.
        probe_bytes: Bytes one probe's capture takes (inputs and output gradients of every layer), plus
            whatever else the caller holds per probe of a block (e.g. representations).
        layers: Number of per-layer blocks.
        memory_budget: Bytes, or a string such as ``"2GiB"``; None: ``memory.default_memory_budget()``.
        block_size: Force the block size (1..n) instead of deriving it from the budget.
        worker, workers: This worker's share.
        extra_blocks: More ``(b, b)`` float64 blocks the caller holds per pair (e.g. distance blocks).

    Returns:
        A :class:`BlockPlan`.

    Raises:
        ValueError: A budget too small for even one probe per block, or a bad block size or share.

    Example:
        >>> plan = plan_blocks(10_000, probe_bytes=10_000, layers=4, memory_budget="1GiB")
        >>> 1 <= plan.block_size <= 10_000, plan.cached_blocks == len(plan.bounds)
        (True, True)
    """
    n = check_int(n, "n")
    budget = default_memory_budget() if memory_budget is None else check_memory_budget(memory_budget)
    workers = check_int(workers, "workers")
    worker = check_int(worker, "worker", minimum=0)
    if worker >= workers:
        raise ValueError(f"Received: worker={worker} of workers={workers}; expected 0 <= worker < workers.")
    per_block = layers + 1 + PAIR_TEMPORARIES + extra_blocks
    if block_size is None:
        share = PAIR_SHARE * budget
        a, b_ = 8.0 * per_block, 4.0 * probe_bytes
        b = int((-b_ + math.sqrt(b_ * b_ + 4 * a * share)) / (2 * a))
        if b < 1:
            raise ValueError(
                f"Received: memory_budget={budget} bytes; one block pair of a single probe needs "
                f"{pair_bytes(1, probe_bytes, per_block)} bytes. Fix: raise memory_budget."
            )
        b = min(n, b)
    else:
        b = min(n, check_int(block_size, "block_size"))
    blocks = math.ceil(n / b)
    left = budget - pair_bytes(b, probe_bytes, per_block)
    cached = int(min(blocks, max(0, left) // max(1, b * probe_bytes)))
    left -= cached * b * probe_bytes
    mine = sum(1 for p in range(blocks) if p % workers == worker)
    buffer = left >= mine * 8 * b * b * (layers + 1)
    elements = int(min(BLOCK_ELEMENTS, max(2**16, budget // 64)))
    return BlockPlan(n, b, budget, cached, bool(buffer), worker, workers, elements)


def block_total(per_layer: Dict[str, np.ndarray], shape: tuple) -> np.ndarray:
    """The sum of per-layer blocks of ``shape``, as a new array (the blocks are left as they are).

    Example:
        >>> block_total({"a": np.ones((2, 3)), "b": np.full((2, 3), 2.0)}, (2, 3))[0]
        array([3., 3., 3.])
    """
    values = list(per_layer.values())
    if len(values) < 2:
        return np.array(values[0]) if values else np.zeros(shape)
    total = np.add(values[0], values[1])  # a new array, without a pass of zeros first
    for g in values[2:]:
        total += g
    return total


@dataclasses.dataclass
class GramBlock:
    """One block of the Gram matrix.

    Attributes:
        i, j: Block indices (``i <= j``).
        rows, cols: The probes of the block's rows and columns.
        total: ``(len(rows), len(cols))`` float64, the sum of ``per_layer``.
        per_layer: Layer name → its block, in forward order.
    """

    i: int
    j: int
    rows: slice
    cols: slice
    total: np.ndarray
    per_layer: Dict[str, np.ndarray]

    @property
    def diagonal(self) -> bool:
        return self.i == self.j


@dataclasses.dataclass
class Norms:
    """What the diagonal blocks give: per-example losses and squared gradient norms.

    Entries of probes whose diagonal block another worker formed are 0 and ``filled`` is False there;
    summing ``Norms`` of all workers (an all-reduce) gives every entry.

    Attributes:
        losses: ``(N,)`` per-example losses.
        total: ``(N,)`` diagonal of the total Gram.
        per_layer: Layer name → ``(N,)`` diagonal of its block.
        filled: ``(N,)`` True where this worker formed the entry.
    """

    losses: np.ndarray
    total: np.ndarray
    per_layer: Dict[str, np.ndarray]
    filled: np.ndarray


class GramBlocks:
    """The Gram matrix of a prepared measurement as a stream of blocks (see the module docstring).

    Call :meth:`norms` first (it forms this worker's diagonal blocks), then iterate for this worker's
    pairs, diagonal ones first. Made by :func:`~keras_stiffness.engine.api.gram_blocks`.
    """

    def __init__(
        self,
        setup,
        plan: BlockPlan,
        *,
        devices: Sequence[str] = (),
        progress: Optional[Callable[[int, int], None]] = None,
        keep_diagonal: bool = False,
    ) -> None:
        self.setup = setup
        self.plan = plan
        self.devices = list(devices)
        self.progress = progress
        self._keep = keep_diagonal or plan.buffer_diagonal
        self._cache: Dict[int, object] = {}
        self._spilled: Dict[int, str] = {}
        self._spill_dir: Optional[str] = None
        self._diagonal: Dict[int, GramBlock] = {}
        self._norms: Optional[Norms] = None
        self._done = 0

    @property
    def layers(self) -> List[str]:
        """Names of the per-layer blocks, in forward order."""
        return self.setup.layer_names

    @property
    def method(self) -> str:
        """The method used: ``"structured"`` or ``"jacobian"``."""
        return self.setup.method

    @property
    def rules(self) -> Dict[str, str]:
        """Layer name → how its block is computed."""
        return self.setup.rules

    @property
    def total_steps(self) -> int:
        """Blocks this worker forms: its diagonal blocks twice when they are not kept, once otherwise."""
        mine = self.plan.my_pairs
        return len(mine) + (0 if self._keep else sum(1 for i, j in mine if i == j))

    def _device(self, p: int):
        import contextlib

        if not self.devices:
            return contextlib.nullcontext()
        import tensorflow as tf

        return tf.device(self.devices[p % len(self.devices)])

    def _capture(self, k: int):
        if k in self._cache:
            return self._cache[k]
        if k in self._spilled:
            with open(self._spilled[k], "rb") as f:
                return pickle.load(f)
        lo, hi = self.plan.bounds[k]
        value = self.setup.capture_block(lo, hi)
        if k < self.plan.cached_blocks:
            self._cache[k] = value
        elif len(self.plan.bounds) > 2:  # used again later: keep it on disk
            self._spill(k, value)
        return value

    def _spill(self, k: int, value) -> None:
        import os
        import tempfile

        if self._spill_dir is None:
            self._spill_dir = tempfile.mkdtemp(prefix="kstiff-blocks-")
        path = os.path.join(self._spill_dir, f"block{k}.pickle")
        with open(path, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        self._spilled[k] = path

    def close(self) -> None:
        """Remove the spilled captures (also done when the stream is exhausted or collected)."""
        if self._spill_dir is not None:
            import shutil

            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None
            self._spilled.clear()
        self._cache.clear()

    def __del__(self) -> None:
        self.close()

    def _block(self, p: int, i: int, j: int, first) -> GramBlock:
        bounds = self.plan.bounds
        with self._device(p):
            second = first if i == j else self._capture(j)
            per_layer, total = self.setup.pair_grams(first, second, self.plan.block_elements)
        rows, cols = slice(*bounds[i]), slice(*bounds[j])
        if total is None:  # not formed with the layers' blocks
            total = block_total(per_layer, (rows.stop - rows.start, cols.stop - cols.start))
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self.total_steps)
        return GramBlock(i, j, rows, cols, total, per_layer)

    def norms(self) -> Norms:
        """Form this worker's diagonal blocks: losses and squared norms of their probes (see :class:`Norms`)."""
        if self._norms is not None:
            return self._norms
        n = self.plan.n
        if self.progress is not None:
            self.progress(0, self.total_steps)
        out = Norms(np.zeros(n), np.zeros(n), {name: np.zeros(n) for name in self.layers}, np.zeros(n, bool))
        for p, (i, j) in enumerate(self.plan.pairs):
            if i != j or p % self.plan.workers != self.plan.worker:
                continue
            lo, hi = self.plan.bounds[i]
            first = self._capture(i)
            block = self._block(p, i, i, first)
            out.losses[lo:hi] = first.losses
            out.total[lo:hi] = np.diagonal(block.total)
            for name, g in block.per_layer.items():
                out.per_layer[name][lo:hi] = np.diagonal(g)
            out.filled[lo:hi] = True
            if self._keep:
                self._diagonal[i] = block
        self._norms = out
        return out

    def __iter__(self) -> Iterator[GramBlock]:
        self.norms()
        held: Tuple[int, object] = (-1, None)
        for p, (i, j) in enumerate(self.plan.pairs):
            if p % self.plan.workers != self.plan.worker:
                continue
            if i == j and i in self._diagonal:
                yield self._diagonal.pop(i)
                continue
            if held[0] != i:
                held = (i, self._capture(i))
            yield self._block(p, i, j, held[1])
        self.close()
