"""The engine's memory constants, in one place: how large a temporary any step may allocate.

Sizes are in elements (multiply by 8 for float64, 4 for float32 bytes). The Gram products, the
materialized per-example gradients, the jacobian fallback and the capture pass all size their chunks
from these, so lowering one bounds that step's peak memory.
"""

#: Probes per forward/backward pass of the capture.
CAPTURE_CHUNK = 1024
#: Largest float64 temporary a Gram product may allocate at once (2**25 = 256 MiB).
BLOCK_ELEMENTS = 2**25
#: Largest per-example gradient matrix kept whole; beyond it, blocks are recomputed.
MATERIALIZE_ELEMENTS = 2**27
#: Per-example jacobian elements computed in one chunk (float32: 256 MiB).
JACOBIAN_CHUNK_ELEMENTS = 2**26
#: Per-example jacobian elements kept whole (float64: 6 GiB); beyond it, chunks are recomputed per
#: block of the Gram (bounded memory, quadratic time in the number of chunks).
JACOBIAN_CACHE_ELEMENTS = 3 * 2**28
#: Vectorized (pfor) jacobians hold about ``chunk² × activations per example`` elements at once.
PFOR_ELEMENTS = 2**27

#: The default memory budget of a measurement, in bytes: 2 GiB, or a quarter of the machine's
#: memory when that is less (see :func:`default_memory_budget`).
DEFAULT_MEMORY_BUDGET = 2 * 2**30
#: ``(b, b)`` float64 temporaries a block pair needs beyond its per-layer blocks and total: the
#: products' own temporaries and the summaries' cosine, sign and mask blocks.
PAIR_TEMPORARIES = 12
#: Share of the budget one block pair may take; the rest holds cached captures and diagonal blocks.
PAIR_SHARE = 0.5


def default_memory_budget() -> int:
    """The budget a measurement uses when none is given: ``min(2 GiB, physical memory / 4)``.

    Example:
        >>> 2**24 <= default_memory_budget() <= DEFAULT_MEMORY_BUDGET
        True
    """
    import os

    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not a POSIX system: take the cap
        return DEFAULT_MEMORY_BUDGET
    return int(max(2**24, min(DEFAULT_MEMORY_BUDGET, physical // 4)))
