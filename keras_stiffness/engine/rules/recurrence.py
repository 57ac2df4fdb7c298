"""The capture-pass forward of SimpleRNN, LSTM and GRU: the layer's recurrence, step by step, written
from its own cell weights and settings, with the taps the recurrent rule needs.

It follows Keras' TensorFlow RNN loop (``keras/src/backend/tensorflow/rnn.py``) exactly:

- ``go_backwards`` reverses the inputs (and the mask), and the returned sequence stays in processed
  order (Keras returns the reversed sequence; Bidirectional flips it back itself);
- at a masked step the states keep their previous values and the output is the previous step's
  output (zeros before the first step), or zeros with ``zero_output_for_mask``;
- ``initial_state`` passed to the call is used, zeros otherwise;
- dropout and recurrent dropout are off: the capture pass runs in inference mode.

Taps (see :mod:`.recurrent` for why these suffice): ``"x"``, the input projections of all steps,
``(n, t, g·u)``; value-only ``"h"``, the state before each step ``(n, t, u)``; for GRU, value-only
``"r"``, the reset gate of each step ``(n, t, u)``. Value-only taps record a tensor without putting
the tap on the computation (its gradient is zero and unused).
"""

from __future__ import annotations

import inspect
from typing import Dict


def standard_cells() -> Dict[type, type]:
    """Each supported layer class → the only cell class the rule reproduces."""
    from keras import layers

    return {layers.LSTM: layers.LSTMCell, layers.GRU: layers.GRUCell, layers.SimpleRNN: layers.SimpleRNNCell}


def gate_blocks(layer) -> int:
    """Gate blocks of the kernels: 4 for LSTM (i, f, c, o), 3 for GRU (z, r, h), 1 for SimpleRNN."""
    from keras import layers

    if isinstance(layer, layers.LSTM):
        return 4
    if isinstance(layer, layers.GRU):
        return 3
    return 1


def sequences_of(layer, args, kwargs):
    """The input sequence of a call (first positional argument, else the keyword)."""
    if args:
        return args[0]
    for name in ("sequences", "inputs"):
        if name in kwargs:
            return kwargs[name]
    raise TypeError(f"No input sequence in the call of {layer.name!r}: args={args!r}, kwargs={sorted(kwargs)}")


def _arguments(call, args, kwargs) -> dict:
    """``call``'s arguments by name (``initial_state``, ``mask`` may come positionally)."""
    try:
        return inspect.signature(call).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return dict(kwargs)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _initial_states(layer, states, n, dtype) -> list:
    import tensorflow as tf

    count = 2 if gate_blocks(layer) == 4 else 1
    if states is None:
        return [tf.zeros((n, layer.cell.units), dtype) for _ in range(count)]
    if not isinstance(states, (list, tuple)):
        states = [states]
    return [tf.cast(tf.convert_to_tensor(s), dtype) for s in list(states)[:count]]


def _weights(cell, dtype) -> dict:
    """Kernel, recurrent kernel and the input/recurrent biases as tensors of ``dtype``."""
    import tensorflow as tf
    from keras import ops

    def t(v):
        return tf.cast(ops.convert_to_tensor(v), dtype)

    w = {"kernel": t(cell.kernel), "recurrent": t(cell.recurrent_kernel), "bias_x": None, "bias_h": None}
    if cell.use_bias:
        bias = t(cell.bias)
        if getattr(cell, "reset_after", False):  # GRU: (2, 3u) = input bias, recurrent bias
            w["bias_x"], w["bias_h"] = bias[0], bias[1]
        else:
            w["bias_x"] = bias
    return w


def _lstm_step(cell, w, p, states):
    import tensorflow as tf

    h, c = states
    z = p + tf.linalg.matmul(h, w["recurrent"])
    i, f, g, o = tf.split(z, 4, axis=-1)
    act, rec = cell.activation, cell.recurrent_activation
    c = rec(f) * c + rec(i) * act(g)
    h = rec(o) * act(c)
    return h, [h, c], None


def _gru_step(cell, w, p, states):
    import tensorflow as tf

    (h,) = states
    u = cell.units
    x_z, x_r, x_h = tf.split(p, 3, axis=-1)
    act, rec = cell.activation, cell.recurrent_activation
    if cell.reset_after:
        inner = tf.linalg.matmul(h, w["recurrent"])
        if w["bias_h"] is not None:
            inner = inner + w["bias_h"]
        z = rec(x_z + inner[:, :u])
        r = rec(x_r + inner[:, u : 2 * u])
        hh = act(x_h + r * inner[:, 2 * u :])
    else:
        inner = tf.linalg.matmul(h, w["recurrent"][:, : 2 * u])
        z = rec(x_z + inner[:, :u])
        r = rec(x_r + inner[:, u:])
        hh = act(x_h + tf.linalg.matmul(r * h, w["recurrent"][:, 2 * u :]))
    h = z * h + (1 - z) * hh
    return h, [h], r


def _simple_step(cell, w, p, states):
    import tensorflow as tf

    (h,) = states
    out = p + tf.linalg.matmul(h, w["recurrent"])
    if cell.activation is not None:
        out = cell.activation(out)
    return out, [out], None


def _step_function(layer):
    return {4: _lstm_step, 3: _gru_step, 1: _simple_step}[gate_blocks(layer)]


def run_recurrence(layer, x, initial_state=None, mask=None, tap=None):
    """The layer's recurrence on ``x`` ``(n, t, d)``, returning what ``layer.call`` returns.

    Args:
        layer: A SimpleRNN, LSTM or GRU with its standard cell.
        x: Input sequences (a tensor or array).
        initial_state: States passed to the call, or ``None`` for zeros.
        mask: ``(n, t)`` boolean mask (or a nested structure whose first entry is it), or ``None``.
        tap: The capture's ``tap(name, z)``; ``None`` runs without taps.

    Returns:
        The output (``(n, t, u)`` with ``return_sequences``, else ``(n, u)``), followed by the final
        states when ``return_state``.
    """
    import tensorflow as tf

    cell = layer.cell
    dtype = tf.as_dtype(cell.compute_dtype)
    x = tf.cast(tf.convert_to_tensor(x), dtype)
    n, steps = tf.shape(x)[0], int(x.shape[1])  # the loop over steps is a Python loop: static length
    if mask is not None:
        mask = tf.cast(tf.convert_to_tensor(_first(mask)), tf.bool)
        mask = tf.reshape(mask, (n, steps))
    if layer.go_backwards:
        x = tf.reverse(x, [1])
        mask = None if mask is None else tf.reverse(mask, [1])
    w = _weights(cell, dtype)
    proj = tf.reshape(tf.linalg.matmul(tf.reshape(x, (-1, x.shape[-1])), w["kernel"]), (n, steps, -1))
    if w["bias_x"] is not None:
        proj = proj + w["bias_x"]
    if tap is not None:
        proj = tap("x", proj)
    states = _initial_states(layer, initial_state, n, dtype)
    step = _step_function(layer)
    zero = tf.zeros((n, cell.units), dtype)
    prev_out, outputs, h_before, gates = zero, [], [], []
    for t, p in enumerate(tf.unstack(proj, axis=1)):
        h_before.append(states[0])
        out, new_states, r = step(cell, w, p, states)
        gates.append(r)
        if mask is not None:
            m = mask[:, t : t + 1]
            out = tf.where(m, out, zero if layer.zero_output_for_mask else prev_out)
            new_states = [tf.where(m, s, old) for s, old in zip(new_states, states)]
        prev_out, states = out, new_states
        if layer.return_sequences:
            outputs.append(out)
    if tap is not None:
        tap("h", tf.stack(h_before, axis=1))
        if gates[0] is not None:
            tap("r", tf.stack(gates, axis=1))
    output = tf.stack(outputs, axis=1) if layer.return_sequences else prev_out
    if layer.return_state:
        return (output, *states)
    return output


def recurrent_forward(layer, call, args, kwargs, tap):
    """Rule forward: run :func:`run_recurrence` in place of ``layer.call``.

    The ``training`` argument is not read: the capture pass runs in inference mode, where dropout and
    recurrent dropout are off.
    """
    arguments = _arguments(call, args, kwargs)
    x = sequences_of(layer, args, kwargs)
    return run_recurrence(layer, x, arguments.get("initial_state"), arguments.get("mask"), tap)
