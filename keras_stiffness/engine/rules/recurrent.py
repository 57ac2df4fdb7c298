"""SimpleRNN, LSTM, GRU: the input kernel ``W`` acts on ``x_t`` and the recurrent kernel ``U`` on
``h_{t-1}`` at every step, so both are positions rules with the time steps as positions.

The per-example gradients are ``J_W = Σ_t x_t ⊗ δx_t`` and ``J_U = Σ_t h_{t-1} ⊗ δh_t``, where
``δx_t`` (``δh_t``) is the gradient at the input (recurrent) projection of step ``t``. During the
capture pass the layer runs as the explicit recurrence of :mod:`.recurrence` with ONE tap: the input
projections of all steps at once, ``P = X W (+ b)`` of shape ``(n, t, g·u)``, computed before the
loop. The recurrent projections need no tap of their own, because their gradient follows exactly
from ``δx``:

- LSTM, SimpleRNN, and the update/reset gates of GRU: ``x_t W + h_{t-1} U`` enter the cell only
  through their sum, so ``δh_t = δx_t``;
- GRU's candidate with ``reset_after=True``: ``hh = act(x_h + r ⊙ (h U_h + b_h))``, so
  ``δh_t = r_t ⊙ δx_t`` on that block;
- GRU's candidate with ``reset_after=False``: ``hh = act(x_h + (r ⊙ h) U_h)``, so ``δh_t = δx_t``
  with the input ``r_t ⊙ h_{t-1}`` in place of ``h_{t-1}`` for the columns ``U_h``.

The recurrence also records (value-only taps) ``h_{t-1}`` and, for GRU, ``r_t`` per step. Masked
steps keep the previous state, so the gradient at their projections is zero and they add nothing.
Time runs in processed order (reversed inputs for ``go_backwards``), the order of the tapped values.

Index letters besides those of :mod:`.base`: ``u`` units (state size), ``g`` gate blocks of the
kernels (SimpleRNN 1; LSTM 4: i, f, c, o; GRU 3: z, r, h).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from keras_stiffness.engine.rules.base import LayerCapture, Rule, concat_calls, positions_gram, vector_gram
from keras_stiffness.engine.rules.recurrence import gate_blocks, recurrent_forward, sequences_of, standard_cells


def _processed_inputs(layer, record) -> np.ndarray:
    """The layer's input sequence ``(n, t, d)`` in processed order (reversed for ``go_backwards``)."""
    x = np.asarray(sequences_of(layer, record.args, record.kwargs))
    return x[:, ::-1] if layer.go_backwards else x


def recurrent_gram(layer, captured: LayerCapture) -> Dict[str, np.ndarray]:
    """Kernel, recurrent kernel and bias Grams of SimpleRNN/LSTM/GRU over all calls of the layer.

    Only the blocks of trainable variables are computed (frozen ones are dropped by the engine anyway).
    """
    cell, p, u = layer.cell, captured.products, layer.cell.units
    gru = gate_blocks(layer) == 3

    def steps(table: str, name: str) -> np.ndarray:  # (n, t, ·) over all calls
        return concat_calls([np.asarray(getattr(c, table)[name]) for c in captured.calls])

    dx = steps("grads", "x")  # (n, t, g·u)
    dh = dx
    if gru and cell.reset_after:  # the candidate's recurrent projection is scaled by r
        dh = np.concatenate([dx[..., : 2 * u], dx[..., 2 * u :] * steps("values", "r")], axis=-1)
    out: Dict[str, np.ndarray] = {}
    if cell.kernel.trainable:
        x = concat_calls([_processed_inputs(layer, c) for c in captured.calls])
        out[cell.kernel.name] = positions_gram(x, dx, products=p)
    if cell.recurrent_kernel.trainable:
        h = steps("values", "h")
        if gru and not cell.reset_after:  # the candidate's columns see r ⊙ h
            rec = positions_gram(h, dx[..., : 2 * u], products=p)
            rec += positions_gram(steps("values", "r") * h, dx[..., 2 * u :], products=p)
        else:
            rec = positions_gram(h, dh, products=p)
        out[cell.recurrent_kernel.name] = rec
    if cell.use_bias and cell.bias.trainable:
        bias = dx.sum(axis=1)
        if gru and cell.reset_after:  # stored as (2, 3u): input bias, recurrent bias
            bias = np.stack([bias, dh.sum(axis=1)], axis=1)
        out[cell.bias.name] = vector_gram(bias, p)
    return out


def recurrent_unsupported(layer) -> Optional[str]:
    """Why the rule does not apply: a stateful layer, a custom cell, or a subclass that changes the
    recurrence (its own ``call``/``inner_loop``). ``unroll`` and ``use_cudnn`` compute the same math."""
    if getattr(layer, "stateful", False):
        return "stateful RNN (its state carries over between batches)"
    for base, cell_class in standard_cells().items():
        if isinstance(layer, base):
            if type(layer.cell) is not cell_class:
                return f"custom cell {type(layer.cell).__name__} (expected {cell_class.__name__})"
            for method in ("call", "inner_loop"):
                if getattr(type(layer), method) is not getattr(base, method):
                    return f"{type(layer).__name__} overrides {base.__name__}.{method}"
            return None
    return f"not a SimpleRNN, LSTM or GRU ({type(layer).__name__})"


RECURRENT = Rule("recurrent", gram=recurrent_gram, forward=recurrent_forward, unsupported=recurrent_unsupported)
