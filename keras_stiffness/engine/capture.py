"""The capture pass: one forward pass recording each unit's inputs (and tapped outputs), one backward
pass of the summed per-example loss giving the gradient at every tap.

Because in inference mode example i's loss depends on example i alone, the gradient of the *summed*
loss at a tap is, row by row, the per-example output gradient ``δ_i``. Taps are zero tensors added to
the tapped values; layers are wrapped by replacing ``call`` on the instance for the duration of the
pass only (restored in ``finally``).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from keras_stiffness import keras_compat, nested
from keras_stiffness.engine.rules.base import CallRecord, LayerCapture
from keras_stiffness.engine.units import Unit


def output_forward(layer, call, args, kwargs, tap):
    """Default forward: run the layer, tap every floating-point output."""
    import tensorflow as tf

    out = call(*args, **kwargs)
    leaves = tf.nest.flatten(out)
    tapped = []
    for k, leaf in enumerate(leaves):
        if tf.is_tensor(leaf) and leaf.dtype.is_floating:
            leaf = tap("out" if k == 0 else f"out.{k}", leaf)
        tapped.append(leaf)
    return tf.nest.pack_sequence_as(out, tapped)


def _to_numpy(value):
    import tensorflow as tf

    return tf.nest.map_structure(lambda v: np.asarray(v) if tf.is_tensor(v) else v, value)  # read-only views


@contextlib.contextmanager
def wrapped_units(units: Sequence[Unit], on_call: Callable):
    """Replace ``call`` on each unit's layer instance by ``on_call(unit, original, args, kwargs)``."""
    with contextlib.ExitStack() as stack:
        for unit in units:
            layer = unit.layer
            original = layer.call

            def wrapper(*args, _unit=unit, _original=original, **kwargs):
                return on_call(_unit, _original, args, kwargs)

            stack.enter_context(keras_compat.patched_attribute(layer, "call", wrapper))
        yield


def _concat(parts: List, n_rows: List[int]):
    """Concatenate probe-major arrays of several chunks; other values are taken from the first."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, np.ndarray) and first.ndim >= 1 and first.shape[0] == n_rows[0]:
        return np.concatenate(parts, axis=0)
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([p[k] for p in parts], n_rows) for k in range(len(first)))
    if isinstance(first, dict):
        return {k: _concat([p[k] for p in parts], n_rows) for k in first}
    return first


def stack_captures(first: LayerCapture, second: LayerCapture) -> LayerCapture:
    """One layer's captures of two probe blocks stacked (``first``'s rows, then ``second``'s), marked
    so that the rule forms only the cross block between them (``split`` = rows of ``first``).

    Raises:
        ValueError: The layer was called a different number of times in the two blocks.
    """
    if len(first.calls) != len(second.calls):
        raise ValueError(
            f"A layer was called {len(first.calls)} time(s) for one block of probes and {len(second.calls)} "
            "for another; expected the same calls for every probe (no data-dependent control flow)."
        )
    rows = [first.n, second.n]
    calls = [
        CallRecord(
            args=_concat([a.args, b.args], rows),
            kwargs=_concat([a.kwargs, b.kwargs], rows),
            values=_concat([a.values, b.values], rows),
            grads=_concat([a.grads, b.grads], rows),
        )
        for a, b in zip(first.calls, second.calls)
    ]
    return LayerCapture(calls=calls, n=first.n + second.n, precision=first.precision, split=first.n)


def capture_bytes(captures: Dict[str, LayerCapture]) -> int:
    """Bytes held by the arrays of a capture (what caching it costs)."""
    total = 0

    def add(value) -> None:
        nonlocal total
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, (tuple, list)):
            for v in value:
                add(v)
        elif isinstance(value, dict):
            for v in value.values():
                add(v)

    for captured in captures.values():
        for call in captured.calls:
            for part in (call.args, call.kwargs, call.values, call.grads):
                add(part)
    return total


def chunk_records(model, units: Sequence[Unit], xb, yb, per_example_loss, grads: bool = True) -> tuple:
    """One forward (and backward) pass over one chunk of probes, leaving tensors behind.

    Runs eagerly, or inside a ``tf.function`` being traced (see :mod:`keras_stiffness.engine.traced`).

    Returns:
        ``(records, order, loss)``: ``{unit name: [CallRecord]}`` whose values are tensors (each
        record's ``output`` is its first output), unit names in the order of their first call, and the
        ``(n,)`` per-example losses (``None`` without grads).
    """
    import tensorflow as tf

    records: Dict[str, List[CallRecord]] = {u.name: [] for u in units}
    taps: List = []
    order: List[str] = []
    tape = tf.GradientTape(watch_accessed_variables=False)

    def on_call(unit, original, args, kwargs):
        record = CallRecord(args=args, kwargs=kwargs, values={})

        def tap(name, z):
            if not grads:
                return z
            zero = tf.zeros_like(z)
            tape.watch(zero)
            record.values[name] = z
            taps.append((record, name, zero))
            return z + zero

        forward = unit.rule.forward if unit.rule is not None and unit.rule.forward else output_forward
        out = forward(unit.layer, original, args, kwargs, tap)
        record.output = tf.nest.flatten(out)[0]
        records[unit.name].append(record)
        if unit.name not in order:
            order.append(unit.name)
        return out

    loss = None
    with wrapped_units(units, on_call), tape:
        pred = model(nested.to_tensors(xb), training=False)
        if grads:
            loss = per_example_loss(yb, pred)
            total = tf.reduce_sum(loss)
    if grads:
        grad_values = tape.gradient(total, [z for _, _, z in taps])
        for (record, name, _), g in zip(taps, grad_values):
            record.grads[name] = tf.zeros_like(record.values[name]) if g is None else g
    return records, order, loss


def records_to_numpy(records: Dict[str, List[CallRecord]]) -> None:
    """Every tensor of the records as a NumPy array, in place (the first call keeps its output)."""
    for calls in records.values():
        for k, record in enumerate(calls):
            record.args = _to_numpy(record.args)
            record.kwargs = _to_numpy(record.kwargs)
            record.values = _to_numpy(record.values)
            record.grads = _to_numpy(record.grads)
            record.output = np.asarray(record.output) if k == 0 else None


def capture(
    model,
    units: Sequence[Unit],
    x: np.ndarray,
    y: Optional[np.ndarray],
    per_example_loss: Optional[Callable],
    *,
    chunk_size: int,
    grads: bool = True,
    precision: str = "float32",
    run_chunk: Optional[Callable] = None,
) -> tuple:
    """Run the capture pass over ``x`` in chunks.

    Args:
        model: The Keras model (inference mode is forced).
        units: Units whose layers are tapped.
        x, y: Probes and labels.
        per_example_loss: ``(y_true, y_pred) -> (n,)`` losses; unused when ``grads`` is False.
        chunk_size: Probes per forward/backward pass.
        grads: False for a forward-only pass (representations): only outputs are kept.
        precision: Product precision handed to the rules (stored on each :class:`LayerCapture`).
        run_chunk: ``(xb, yb) -> (records, order, loss)`` with NumPy records, e.g. a
            :class:`~keras_stiffness.engine.traced.TracedCapture`; default: :func:`chunk_records`
            run eagerly.

    Returns:
        ``(captures, losses, outputs)``: ``{unit name: LayerCapture}``, ``(N,)`` per-example losses
        (``None`` without grads), ``{unit name: (N, ...) output of its first call}``; both dicts in
        the order the layers were first called (forward order).
    """
    units = [u for u in units if u.layer is not None]  # shared-variable units have no layer to tap
    if run_chunk is None:
        run_chunk = functools.partial(eager_chunk, model, units, per_example_loss=per_example_loss, grads=grads)
    n = nested.n_rows(x)
    chunks: Dict[str, List[List[CallRecord]]] = {u.name: [] for u in units}
    outputs: Dict[str, List[np.ndarray]] = {u.name: [] for u in units}
    losses: List[np.ndarray] = []
    rows: List[int] = []
    order: List[str] = []  # unit names in the order of their first call
    for lo in range(0, n, chunk_size):
        xb = nested.cut(x, lo, lo + chunk_size)
        rows.append(nested.n_rows(xb))
        records, chunk_order, loss = run_chunk(xb, None if y is None else y[lo : lo + chunk_size])
        order.extend(name for name in chunk_order if name not in order)
        if grads:
            losses.append(loss)
        for unit in units:
            calls = records[unit.name]
            if calls:
                outputs[unit.name].append(calls[0].output)
            for record in calls:
                record.output = None
            if grads:
                chunks[unit.name].append(calls)
    captures = {}
    by_name = {u.name: u for u in units}
    for unit in [by_name[name] for name in order]:
        per_chunk = chunks[unit.name]
        if not grads or not per_chunk or not per_chunk[0]:
            continue
        n_calls = len(per_chunk[0])
        calls = []
        for c in range(n_calls):
            parts = [chunk[c] for chunk in per_chunk]
            calls.append(
                CallRecord(
                    args=_concat([p.args for p in parts], rows),
                    kwargs=_concat([p.kwargs for p in parts], rows),
                    values=_concat([p.values for p in parts], rows),
                    grads=_concat([p.grads for p in parts], rows),
                )
            )
        captures[unit.name] = LayerCapture(calls=calls, n=n, precision=precision)
    merged_outputs = {k: _concat(outputs[k], rows) for k in order if outputs[k]}
    loss_values = np.concatenate(losses) if grads else None
    return captures, loss_values, merged_outputs


def eager_chunk(model, units, xb, yb, *, per_example_loss, grads: bool) -> tuple:
    """:func:`chunk_records` run eagerly, its records and losses as NumPy arrays."""
    records, order, loss = chunk_records(model, units, xb, yb, per_example_loss, grads)
    records_to_numpy(records)
    return records, order, None if loss is None else loss.numpy()
