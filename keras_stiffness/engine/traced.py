"""The capture pass and the rules' products compiled: ``tf.function`` graphs per model and shape.

Run eagerly, a capture pass costs Keras' Python dispatch for every layer call on top of its
arithmetic; on a small network that dispatch is most of the pass (the paper's MLP at N = 1000: about
21 ms eager, 6 ms as a graph). A :class:`TracedCapture` traces :func:`~keras_stiffness.engine.capture.
chunk_records` once per input shape, remembers where each recorded tensor sits in the records (their
*skeleton*), and afterwards runs the graph and puts the returned tensors back in place. The graph
reads the model's variables when it runs, so later weights are always used.

Tracing costs about what a few eager passes cost, so it pays only when a capture is repeated: a
shape is traced the :data:`COMPILE_AFTER`-th time it is captured (a callback's second measurement, or
the second block of a large one). A model whose layers cannot be traced (Python control flow on
tensor values in a custom layer) stays eager, with the same results.

A :class:`TracedProducts` does the same for the Gram products of one pair of probe blocks: every layer
whose rule is ``traceable`` runs on symbolic tensors in one graph, which also sums each layer's blocks
and all layers in float64, where the products were formed. The arrays that come back are read-only
views of the graph's outputs: no float64 copy is made on the CPU (fresh host memory costs as much as
the arithmetic here: on the paper's MLP at N = 1000 the copies took a quarter of the time). A layer
whose capture cannot be traced (NumPy in its rule, host row blocks for large blocks) is left out of
the graph and computed eagerly.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from keras_stiffness import nested
from keras_stiffness.engine.capture import chunk_records, eager_chunk
from keras_stiffness.engine.rules.base import CallRecord, LayerCapture

#: A chunk shape is traced the time it is captured for this count (1: always; 0: never).
COMPILE_AFTER = 2


@dataclasses.dataclass(frozen=True)
class _Slot:
    """Where a tensor of the records sits in the graph's flat output list."""

    index: int


class _Sources:
    """The tensors behind the NumPy views a traced capture hands out, so that the product graph takes
    the tensors themselves (no copy back, and on a GPU no trip through the host)."""

    def __init__(self) -> None:
        self._by_id: Dict[int, tuple] = {}

    def view(self, tensor) -> np.ndarray:
        """A read-only NumPy view of ``tensor``, remembered while the view lives."""
        array = np.asarray(tensor)
        key = id(array)
        self._by_id[key] = (weakref.ref(array, lambda _, key=key: self._by_id.pop(key, None)), tensor)
        return array

    def tensor(self, array):
        """The tensor ``array`` was made from by :meth:`view`, else ``array`` as a new tensor."""
        import tensorflow as tf

        entry = self._by_id.get(id(array))
        if entry is not None and entry[0]() is array:
            return entry[1]
        return tf.convert_to_tensor(array)


_SOURCES = _Sources()


def signature(xb, yb) -> tuple:
    """Shapes and dtypes of a chunk's inputs and labels (NumPy arrays): one graph per signature."""
    parts = nested.leaves(xb) + ([] if yb is None else [np.asarray(yb)])
    return tuple((np.shape(v), np.asarray(v).dtype.str) for v in parts)


def _slots(value, flat: List, wanted: Callable[[Any], bool]) -> Any:
    """``value`` with each ``wanted`` leaf replaced by a :class:`_Slot` into ``flat`` (leaves appended)."""
    import tensorflow as tf

    def slot(leaf):
        if wanted(leaf):
            flat.append(leaf)
            return _Slot(len(flat) - 1)
        return leaf

    return tf.nest.map_structure(slot, value)


def _flatten(value, flat: List) -> Any:
    """``value`` with each tensor leaf replaced by a :class:`_Slot` into ``flat``."""
    import tensorflow as tf

    return _slots(value, flat, tf.is_tensor)


def _fill(skeleton, values: List[np.ndarray]) -> Any:
    import tensorflow as tf

    return tf.nest.map_structure(lambda leaf: values[leaf.index] if isinstance(leaf, _Slot) else leaf, skeleton)


def _record_skeleton(record: CallRecord, flat: List, slots: Callable, output: bool = False) -> tuple:
    """``(args, kwargs, values, grads, output)`` of a record with its leaves put in ``flat`` by ``slots``
    (the output only when asked: a layer's first call)."""
    parts = (record.args, record.kwargs, record.values, record.grads)
    return tuple(slots(part, flat) for part in parts) + (slots(record.output, flat) if output else None,)


def _record_from(skeleton: tuple, values) -> CallRecord:
    """The :class:`CallRecord` of :func:`_record_skeleton`, its leaves taken from ``values``."""
    args, kwargs, vals, grads, output = skeleton
    return CallRecord(
        args=_fill(args, values),
        kwargs=_fill(kwargs, values),
        values=_fill(vals, values),
        grads=_fill(grads, values),
        output=None if output is None else _fill(output, values),
    )


class TracedCapture:
    """``(xb, yb) -> (records, order, losses)`` like the eager capture of one chunk, compiled per shape.

    Args:
        model: The Keras model.
        units: Its units (those with a layer are tapped).
        per_example_loss: ``(y_true, y_pred) -> (n,)`` losses (unused when ``grads`` is False).
        grads: False for a forward-only pass.
        compile_after: Trace a signature on this use of it (see :data:`COMPILE_AFTER`).

    Example:
        >>> import keras
        >>> from keras_stiffness.engine.units import model_units
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
        >>> run = TracedCapture(model, model_units(model), None, grads=False, compile_after=1)
        >>> records, order, _ = run(np.ones((4, 3), "float32"), None)
        >>> order, records["out"][0].output.shape, run.traced
        (['out'], (4, 2), 1)
    """

    def __init__(
        self,
        model,
        units,
        per_example_loss: Optional[Callable],
        *,
        grads: bool = True,
        compile_after: Optional[int] = None,
    ) -> None:
        self.model = model
        self.units = [u for u in units if u.layer is not None]
        self.per_example_loss = per_example_loss
        self.grads = grads
        self.compile_after = COMPILE_AFTER if compile_after is None else compile_after
        self.failed: Optional[str] = None  # why tracing failed (the capture then stays eager)
        self._uses: Dict[tuple, int] = {}
        self._skeletons: Dict[tuple, tuple] = {}
        self._function = None
        self._tracing: Optional[tuple] = None  # the signature being traced

    @property
    def traced(self) -> int:
        """How many chunk shapes have a graph."""
        return len(self._skeletons)

    def _graph(self, xb, yb):
        """The traced body: the records' tensors as one flat list (skeleton kept per signature)."""
        records, order, loss = chunk_records(self.model, self.units, xb, yb, self.per_example_loss, self.grads)
        flat: List = []
        skeleton = {
            name: [_record_skeleton(r, flat, _flatten, output=k == 0) for k, r in enumerate(calls)]
            for name, calls in records.items()
        }
        loss_slot = None if loss is None else _flatten(loss, flat)
        self._skeletons[self._tracing] = (skeleton, list(order), loss_slot)
        return flat

    def _eager(self, xb, yb) -> tuple:
        return eager_chunk(self.model, self.units, xb, yb, per_example_loss=self.per_example_loss, grads=self.grads)

    def __call__(self, xb, yb) -> Tuple[Dict[str, List[CallRecord]], List[str], Optional[np.ndarray]]:
        key = signature(xb, yb)
        uses = self._uses[key] = self._uses.get(key, 0) + 1
        waiting = uses < self.compile_after and key not in self._skeletons
        if self.failed is not None or self.compile_after < 1 or waiting:
            return self._eager(xb, yb)
        import tensorflow as tf

        if self._function is None:
            self._function = tf.function(self._graph, autograph=False)
        self._tracing = key
        try:
            flat = self._function(nested.to_tensors(xb), None if yb is None else tf.convert_to_tensor(yb))
        except Exception as exc:  # noqa: BLE001 - a layer that cannot be traced: stay eager, same results
            self.failed = f"{type(exc).__name__}: {exc}"
            return self._eager(xb, yb)
        values = [_SOURCES.view(t) for t in flat]  # views of the tensors' buffers (no copy on CPU)
        skeleton, order, loss_slot = self._skeletons[key]
        records = {name: [_record_from(c, values) for c in calls] for name, calls in skeleton.items()}
        return records, list(order), None if loss_slot is None else _fill(loss_slot, values)


def _array_slots(value, flat: List) -> Any:
    """``value`` with each NumPy array leaf replaced by a :class:`_Slot` into ``flat``."""
    return _slots(value, flat, lambda leaf: isinstance(leaf, np.ndarray))


@dataclasses.dataclass
class PairProducts:
    """What :class:`TracedProducts` formed for one pair of blocks (read-only float64 arrays).

    Attributes:
        per_layer: Unit name → its block, for the units in the graph.
        total: The sum of those blocks.
    """

    per_layer: Dict[str, np.ndarray]
    total: np.ndarray


class TracedProducts:
    """The Gram products of a pair of probe blocks for every unit with a traceable rule, as one graph
    per capture shape.

    Args:
        units: The model's units; those whose rule is ``traceable`` are considered.
        blocks: ``(unit, captured) -> {weight name: block}``: a rule's blocks under the
            trainable-variable contract.
        compile_after: As for :class:`TracedCapture`.
    """

    def __init__(self, units, blocks: Callable, *, compile_after: Optional[int] = None) -> None:
        self.units = [u for u in units if u.layer is not None and u.rule is not None and u.rule.traceable]
        self.blocks = blocks
        self.compile_after = COMPILE_AFTER if compile_after is None else compile_after
        self._uses: Dict[tuple, int] = {}
        self._graphs: Dict[tuple, Any] = {}  # key -> (function, names in the graph) or None (nothing traces)

    @property
    def traced(self) -> int:
        """How many capture shapes have a graph."""
        return sum(1 for g in self._graphs.values() if g is not None)

    @property
    def in_graph(self) -> set:
        """Names of the units some graph computes."""
        return {name for g in self._graphs.values() if g is not None for name in g[1]}

    def __call__(self, captures: Dict[str, LayerCapture], shape: tuple) -> Optional[PairProducts]:
        """The traced units' blocks and their total, or None (not compiled for this shape, or nothing traces)."""
        units = [u for u in self.units if u.name in captures]
        if not units or self.compile_after < 1:
            return None
        flat: List[np.ndarray] = []
        layout = []
        for u in units:
            c = captures[u.name]
            calls = [_record_skeleton(r, flat, _array_slots) for r in c.calls]
            layout.append((u.name, calls, (c.n, c.precision, c.split, c.block_elements)))
        key = (tuple(shape), repr(layout), tuple((v.shape, v.dtype.str) for v in flat))
        if key not in self._graphs:
            uses = self._uses[key] = self._uses.get(key, 0) + 1
            if uses < self.compile_after:
                return None
            self._graphs[key] = self._trace(units, layout, tuple(shape), flat)
        graph = self._graphs[key]
        if graph is None:
            return None

        function, names = graph
        per_layer, total = function(*[_SOURCES.tensor(v) for v in flat])
        return PairProducts({n: np.asarray(g) for n, g in zip(names, per_layer)}, np.asarray(total))

    def _trace(self, units, layout, shape: tuple, flat: List[np.ndarray]):
        """``(concrete function, names)`` for the units that trace, or None when none does."""
        import tensorflow as tf

        by_name = {u.name: u for u in units}
        names: List[str] = []

        def graph(*tensors):
            names.clear()
            per_layer = []
            for name, calls, (n, precision, split, block_elements) in layout:
                records = [_record_from(c, tensors) for c in calls]
                captured = LayerCapture(records, n, precision, split, block_elements)
                # One layer after the other, as eagerly: the layers' product temporaries never coexist,
                # so the memory plan (engine.blocks) holds for the graph too.
                after = [per_layer[-1]] if per_layer else []
                try:
                    with tf.control_dependencies(after):
                        blocks = self.blocks(by_name[name], captured)
                        if not all(tf.is_tensor(b) for b in blocks.values()):
                            continue  # a rule that formed host arrays: eager
                        block = tf.add_n([tf.cast(b, tf.float64) for b in blocks.values()]) if blocks else None
                except Exception:  # noqa: BLE001 - this capture does not trace (NumPy in the rule): eager
                    continue
                if block is None:
                    block = tf.zeros(shape, tf.float64)
                per_layer.append(block)
                names.append(name)
            if not per_layer:
                return [], tf.zeros(shape, tf.float64)
            return per_layer, tf.add_n(per_layer)

        specs = [tf.TensorSpec(v.shape, tf.as_dtype(v.dtype)) for v in flat]
        function = tf.function(graph, autograph=False).get_concrete_function(*specs)
        return (function, list(names)) if names else None
