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
