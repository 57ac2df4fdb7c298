"""The model-agnostic adapter protocol and its two implementations.

Everything above the engine (the measurement, the callback, the CLI) talks to a model only through
:class:`StiffnessAdapter`: per-layer Gram blocks for ``(x, y)``, representations of ``x`` at named
layers, the layer names and a short description. :class:`KerasAdapter` serves Keras models with the
structured engine; :class:`FunctionAdapter` serves any TensorFlow-differentiable per-example loss
through the exact jacobian route.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from keras_stiffness import nested
from keras_stiffness.engine.api import GramResult, check_losses, check_probes, parse_method, total_of
from keras_stiffness.measure.config import LayerSelection
from keras_stiffness.validation import check_choice


@runtime_checkable
class StiffnessAdapter(Protocol):
    """What the toolkit needs from a model: the callback, ``kstiff analyze`` and the measurement use
    nothing else. :class:`KerasAdapter` and :class:`FunctionAdapter` implement it; so can your own class.

    Example:
        >>> import tensorflow as tf
        >>> isinstance(FunctionAdapter(lambda x, y: x, [tf.Variable(1.0)]), StiffnessAdapter)
        True
    """

    def layer_names(self) -> List[str]:
        """Names of the Gram blocks (layers with trainable weights), in forward order."""

    def gram(self, x: np.ndarray, y: np.ndarray) -> GramResult:
        """Exact Gram of per-example loss gradients, total and per layer."""

    def representations(self, x: np.ndarray, layers: LayerSelection = "all") -> Dict[str, np.ndarray]:
        """``{"input": (N, D), layer: (N, D_layer), ...}`` flattened, in forward order."""

    def describe(self) -> dict:
        """JSON-serializable description: name, parameter count, loss, summary text."""

    def check_probes(self, x: np.ndarray, y: np.ndarray) -> None:
        """Raise ValueError, saying what does not fit, when the model cannot take these probes."""


def _flat(a) -> np.ndarray:
    """``(N, D)`` float32; a nested ``a`` (several inputs) has its leaves flattened and concatenated."""
    return nested.flat_concat(nested.as_arrays(a)).astype(np.float32, copy=False)


def select_layers(available: List[str], layers: LayerSelection) -> List[str]:
    """Resolve ``"all"``, ``"none"`` or a list of names against ``available`` (order kept)."""
    if isinstance(layers, str):
        if layers == "all":
            return list(available)
        if layers == "none":
            return []
        layers = [layers]
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise ValueError(
            f"Received layers={list(layers)}; {unknown} not among the model's layers with weights: "
            f"{available}. Expected 'all', 'none' or names from that list."
        )
    return [name for name in available if name in layers]


def shape_text(shape) -> str:
    """``(8, 8, 1)``, with ``None`` for unknown sizes (a single size prints as ``(5)``, as kstiff always did).

    Example:
        >>> shape_text((None, 3)), shape_text((5,))
        ('(None, 3)', '(5)')
    """
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def model_input_shape(model) -> Optional[tuple]:
    """The input shape a Keras model declares, without the batch axis, or None when it declares none."""
    for getter in (lambda: model.inputs[0].shape, lambda: model.input_shape):
        try:
            shape = getter()
        except (AttributeError, ValueError, TypeError, IndexError):
            continue
        if isinstance(shape, list):  # several inputs
            shape = shape[0]
        if shape is not None:
            return tuple(shape)[1:]
    from keras_stiffness.keras_compat import build_input_shape

    shape = build_input_shape(model)
    if isinstance(shape, (list, tuple)) and shape and not isinstance(shape[0], (list, tuple)):
        return tuple(shape)[1:]
    return None


def call_model(model, x: np.ndarray, *, source: str, fix: str) -> np.ndarray:
    """The model's outputs for a few inputs ``x`` in inference mode, or a ValueError naming the shapes.

    The one check of "does the model accept these inputs", used by the callback (on its probes) and by
    ``kstiff analyze`` (on the data set).

    Args:
        model: A Keras model.
        x: A few inputs (two are enough).
        source: What the inputs are, for the message (e.g. "the probes", "data 'digits'").
        fix: How the user fixes it.

    Raises:
        ValueError: The call failed; the message keeps the model's own error, and the cause is chained.
    """
    import keras

    try:
        return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    except Exception as exc:  # noqa: BLE001 - any failure here means the inputs do not fit
        expected = model_input_shape(model)
        what = shape_text(expected) if expected is not None else "another shape"
        detail = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())  # one line, no terminal colours
        raise ValueError(
            f"Model {model.name!r} expects inputs of shape {what}, but {source} gives "
            f"{_shapes_text(x)} (calling the model failed: {type(exc).__name__}: {detail}). {fix}"
        ) from exc


def _shapes_text(x) -> str:
    """``(3, 4)`` for one array; ``{'a': (3), 'b': (4, 2)}`` or ``[(3), (4)]`` for several inputs."""
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {_shapes_text(x[k])}" for k in sorted(x, key=str)) + "}"
    if nested.is_nested(x):
        return "[" + ", ".join(_shapes_text(v) for v in x) + "]"
    return shape_text(np.shape(x)[1:])


class KerasAdapter:
    """Adapter for a Keras model (Sequential, functional, subclassed), using the structured engine.

    Args:
        model: A built, single-output Keras model.
        loss: Defaults to the compiled loss (see :func:`keras_stiffness.gradient_gram`).
        method: ``"auto"``, ``"structured"`` or ``"jacobian"``.
        chunk_size: Probes per pass (default 1024).
        precision: Gram product precision, ``"float32"`` (float64 accumulation) or ``"float64"``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="hidden"),
        ...                           keras.layers.Dense(2, activation="softmax", name="out")])
        >>> model.compile(loss="sparse_categorical_crossentropy")
        >>> x, y = np.random.default_rng(0).normal(size=(6, 3)).astype("float32"), np.array([0, 1] * 3)
        >>> adapter = KerasAdapter(model)
        >>> adapter.gram(x, y).total.shape
        (6, 6)
        >>> list(adapter.representations(x))
        ['input', 'hidden', 'out']
    """

    def __init__(
        self, model, *, loss=None, method: str = "auto", chunk_size: Optional[int] = None, precision: str = "float32"
    ):
        from keras_stiffness.engine.api import check_model
        from keras_stiffness.engine.losses import resolve_loss

        check_model(model)
        self.model = model
        self.loss = loss
        self.method = parse_method(method).value
        self.chunk_size = chunk_size
        self.precision = check_choice(precision, "precision", ("float32", "float64"))
        _, self.loss_name = resolve_loss(model, loss)
        self._order: Optional[List[str]] = None

    def _units(self):
        from keras_stiffness.engine.model_cache import cached_units

        return cached_units(self.model)

    def layer_names(self) -> List[str]:
        if self._order is None:
            return [u.name for u in self._units()]
        return list(self._order)

    def gram_blocks(self, x, y, **blocking):
        """The Gram matrix as a stream of blocks in bounded memory (see ``engine.api.gram_blocks``).

        ``blocking``: memory_budget, block_size, worker, workers, devices, progress, extra_probe_bytes,
        extra_blocks.
        """
        from keras_stiffness.engine.api import gram_blocks

        blocks = gram_blocks(
            self.model,
            x,
            y,
            loss=self.loss,
            method=self.method,
            chunk_size=self.chunk_size,
            precision=self.precision,
            **blocking,
        )
        self._order = list(blocks.layers)
        return blocks

    def gram(self, x: np.ndarray, y: np.ndarray) -> GramResult:
        from keras_stiffness.engine.api import gradient_gram

        result = gradient_gram(
            self.model, x, y, loss=self.loss, method=self.method, chunk_size=self.chunk_size, precision=self.precision
        )
        self._order = list(result.per_layer)
        return result

    def representations(self, x: np.ndarray, layers: LayerSelection = "all") -> Dict[str, np.ndarray]:
        """``{"input": (N, D) flattened x, layer: (N, ...) output of its first call}`` (float32).

        For a model with several inputs (``x`` a dict, list or tuple of arrays), ``"input"`` is every
        input flattened per example and concatenated, in the fixed order of
        :mod:`keras_stiffness.nested` (sorted dict keys, list order): the input-space distance is the
        Euclidean distance over all inputs together.
        """
        from keras_stiffness.engine.api import cast_to_model_dtype
        from keras_stiffness.engine.capture import capture
        from keras_stiffness.engine.memory import CAPTURE_CHUNK
        from keras_stiffness.engine.model_cache import forward_capture

        x = cast_to_model_dtype(self.model, nested.as_arrays(x))
        units = self._units()
        _, _, outputs = capture(
            self.model,
            units,
            x,
            None,
            None,
            chunk_size=self.chunk_size or CAPTURE_CHUNK,
            grads=False,
            run_chunk=forward_capture(self.model, units),
        )
        self._order = list(outputs) + [u.name for u in units if u.name not in outputs]
        chosen = select_layers(self._order, layers)
        reps = {"input": _flat(x)}
        for name in chosen:
            if name in outputs:
                reps[name] = _flat(outputs[name])
        return reps

    def describe(self) -> dict:
        lines: List[str] = []
        try:
            self.model.summary(print_fn=lambda line, *a, **k: lines.append(line))
        except (ValueError, TypeError):  # an unusual subclassed model may not summarize
            lines = [repr(self.model)]
        units = self._units()
        return {
            "name": self.model.name,
            "class": type(self.model).__name__,
            "n_params": int(sum(np.prod(v.shape) for v in self.model.trainable_variables)),
            "loss": self.loss_name,
            "method": self.method,
            "layers": [
                {
                    "name": u.name,
                    "class": type(u.layer).__name__ if u.layer is not None else "shared variable",
                    "rule": u.rule_name,
                }
                for u in units
            ],
            "summary": "\n".join(lines),
        }

    def check_probes(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fail clearly, before any measuring, when the probes do not fit the model or its loss.

        Raises:
            ValueError: The model cannot be called on the probe inputs, or the labels do not match
                its outputs (out-of-range classes, another shape).
        """
        from keras_stiffness.engine.losses import check_labels

        out = call_model(
            self.model,
            nested.cut(nested.as_arrays(x), 0, 2),
            source="the probe set",
            fix="Pass probes preprocessed exactly as the training data.",
        )
        check_labels(np.asarray(y), (len(y), *out.shape[1:]), self.loss_name)


class FunctionAdapter:
    """Adapter for any TensorFlow-differentiable model given as a per-example loss function.

    Gram blocks come from the exact per-example jacobian (chunked over probes), one block per group of
    variables.

    Args:
        per_example_loss: ``(x, y) -> (n,)`` tensor of per-example losses, differentiable in TF with
            respect to ``variables``. Must not reduce over the batch.
        variables: The ``tf.Variable`` s to differentiate (all of them count in the total).
        groups: Optional ``{name: [variables]}`` for per-layer blocks; default one block per variable.
        representation_fn: Optional ``x -> {name: (n, ...) array}`` for distances in those spaces.
        name: A name for descriptions and run files.

    Probes per jacobian chunk are chosen by memory (see ``keras_stiffness.engine.fallback``).

    Example:
        >>> import tensorflow as tf
        >>> w = tf.Variable(tf.random.normal((4, 3)))
        >>> def loss(x, y):
        ...     logits = tf.matmul(tf.cast(x, tf.float32), w)
        ...     return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
        >>> adapter = FunctionAdapter(loss, [w])
        >>> adapter.gram(np.random.rand(5, 4), np.array([0, 1, 2, 0, 1])).total.shape
        (5, 5)
    """

    def __init__(
        self,
        per_example_loss: Callable,
        variables: Sequence,
        *,
        groups: Optional[Dict[str, Sequence]] = None,
        representation_fn: Optional[Callable] = None,
        name: str = "function",
    ):
        if not callable(per_example_loss):
            raise TypeError(
                f"Received per_example_loss of type {type(per_example_loss).__name__}; expected a "
                "callable (x, y) -> per-example losses."
            )
        variables = list(variables)
        if not variables:
            raise ValueError("Received an empty list of variables; expected the weights to differentiate.")
        if groups is None:
            groups = {}
            for k, v in enumerate(variables):
                key = str(getattr(v, "path", None) or getattr(v, "name", f"var{k}"))
                groups[key if key not in groups else f"{key}_{k}"] = [v]
        else:
            grouped = [id(v) for vs in groups.values() for v in vs]
            if sorted(grouped) != sorted(id(v) for v in variables) or len(set(grouped)) != len(grouped):
                raise ValueError(
                    "Received groups that do not cover every variable exactly once; expected each of "
                    f"the {len(variables)} variables in exactly one group."
                )
            groups = {str(k): list(vs) for k, vs in groups.items()}
        self.per_example_loss = per_example_loss
        self.variables = variables
        self.groups = groups
        self.representation_fn = representation_fn
        self.name = name

    def layer_names(self) -> List[str]:
        return list(self.groups)

    def gram_blocks(self, x, y, **blocking):
        """The Gram matrix as a stream of blocks in bounded memory (jacobians of stacked block pairs).

        ``blocking``: as for :meth:`KerasAdapter.gram_blocks`.
        """
        from keras_stiffness.engine.blocks import GramBlocks, plan_blocks

        setup = _FunctionBlocks(self, *check_probes(x, y))
        plan = plan_blocks(
            setup.n,
            probe_bytes=setup.probe_bytes + int(blocking.pop("extra_probe_bytes", 0)),
            layers=len(self.groups),
            memory_budget=blocking.pop("memory_budget", None),
            block_size=blocking.pop("block_size", None),
            worker=blocking.pop("worker", 0),
            workers=blocking.pop("workers", 1),
            extra_blocks=blocking.pop("extra_blocks", 0),
        )
        return GramBlocks(setup, plan, **blocking)

    def gram(self, x: np.ndarray, y: np.ndarray) -> GramResult:
        from keras_stiffness.engine.fallback import jacobian_grams

        x, y = check_probes(x, y)
        per_layer, losses = jacobian_grams(
            lambda lo, hi: self.per_example_loss(nested.cut(x, lo, hi), y[lo:hi]), self.groups, len(y)
        )
        check_losses(losses, getattr(self.per_example_loss, "__name__", "per_example_loss"))
        rules = {name: "jacobian" for name in per_layer}
        return GramResult(
            total=total_of(per_layer, len(y)),
            per_layer=per_layer,
            rules=rules,
            method="jacobian",
            losses=losses,
        )

    def representations(self, x: np.ndarray, layers: LayerSelection = "all") -> Dict[str, np.ndarray]:
        reps = {"input": _flat(x)}
        if self.representation_fn is None:
            return reps
        produced = {str(k): _flat(np.asarray(v)) for k, v in self.representation_fn(x).items()}
        for name in select_layers(list(produced), layers):
            reps[name] = produced[name]
        return reps

    def describe(self) -> dict:
        return {
            "name": self.name,
            "class": "FunctionAdapter",
            "n_params": int(sum(np.prod(v.shape) for v in self.variables)),
            "loss": getattr(self.per_example_loss, "__name__", "per_example_loss"),
            "method": "jacobian",
            "layers": [{"name": g, "class": "variables", "rule": "jacobian"} for g in self.groups],
            "summary": "",
        }

    def check_probes(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fail clearly when the loss function cannot take the probes or reduces over the batch.

        Raises:
            ValueError: The function fails on two probes, or does not return one loss per example.
        """
        name = getattr(self.per_example_loss, "__name__", "per_example_loss")
        x2, y2 = nested.cut(nested.as_arrays(x), 0, 2), np.asarray(y)[:2]
        try:
            values = np.asarray(self.per_example_loss(x2, y2))
        except Exception as exc:  # noqa: BLE001 - any failure here means the probes do not fit
            raise ValueError(
                f"The loss function {name!r} failed on probe inputs of shape {_shapes_text(x2)} and labels of "
                f"shape {y2.shape[1:]} ({type(exc).__name__}: {exc}). Pass probes preprocessed as the "
                "function expects."
            ) from exc
        if values.shape != (len(y2),):
            raise ValueError(
                f"Received: per-example losses of shape {values.shape} from {name!r} for {len(y2)} probes; "
                f"expected shape ({len(y2)},), one loss per example. Do not reduce over the batch."
            )


class _FunctionBlocks:
    """A :class:`FunctionAdapter`'s probes, ready for Gram blocks: each pair is the jacobian of the two
    blocks stacked, of which only the cross block is formed."""

    method = "jacobian"

    def __init__(self, adapter: "FunctionAdapter", x, y) -> None:
        self.adapter, self.x, self.y, self.n = adapter, x, y, len(y)
        self.layer_names = list(adapter.groups)
        self.rules = {name: "jacobian" for name in self.layer_names}
        self.probe_bytes = sum(leaf[:1].nbytes for leaf in nested.leaves(x)) + 8
        self.name = getattr(adapter.per_example_loss, "__name__", "per_example_loss")

    def capture_block(self, lo: int, hi: int):
        from keras_stiffness.engine.api import BlockCapture

        return BlockCapture(lo, hi, None, None)

    def pair_grams(self, first, second, block_elements: int) -> tuple:
        from keras_stiffness.engine.fallback import jacobian_grams

        parts = [(first.lo, first.hi)] if first is second else [(first.lo, first.hi), (second.lo, second.hi)]
        x = nested.concat([nested.cut(self.x, lo, hi) for lo, hi in parts])
        y = np.concatenate([self.y[lo:hi] for lo, hi in parts])
        split = None if first is second else first.hi - first.lo
        grams, losses = jacobian_grams(
            lambda lo, hi: self.adapter.per_example_loss(nested.cut(x, lo, hi), y[lo:hi]),
            self.adapter.groups,
            len(y),
            split=split,
        )
        if split is None:
            check_losses(losses, self.name)
            first.losses = losses
        return grams, None


ADAPTER_METHODS = ("layer_names", "gram", "representations", "describe", "check_probes")


def as_adapter(model_or_adapter, *, loss=None, method: str = "auto") -> StiffnessAdapter:
    """The edge where a Keras model becomes a :class:`KerasAdapter`; an adapter is returned as is.

    Args:
        model_or_adapter: A Keras model, or any object with the :class:`StiffnessAdapter` methods.
        loss: For a Keras model: the loss to differentiate (default: the compiled one).
        method: For a Keras model: ``"auto"``, ``"structured"`` or ``"jacobian"``.

    Raises:
        ValueError: ``loss`` or ``method`` given together with an adapter (they belong to it).
        TypeError: Neither a Keras model nor an adapter.

    Example:
        >>> import tensorflow as tf
        >>> adapter = FunctionAdapter(lambda x, y: x, [tf.Variable(1.0)])
        >>> as_adapter(adapter) is adapter
        True
    """
    if isinstance(model_or_adapter, StiffnessAdapter):
        if loss is not None or method != "auto":
            raise ValueError(
                f"Received: loss={loss!r}, method={method!r} together with an adapter "
                f"({type(model_or_adapter).__name__}); expected them only with a Keras model. Give the "
                "adapter its loss and method when you make it."
            )
        return model_or_adapter
    import keras

    if not isinstance(model_or_adapter, keras.Model):
        missing = [m for m in ADAPTER_METHODS if not callable(getattr(model_or_adapter, m, None))]
        raise TypeError(
            f"Received: {type(model_or_adapter).__name__}; expected a Keras model or a StiffnessAdapter "
            f"(missing methods: {', '.join(missing)}). Wrap other models in a FunctionAdapter."
        )
    return KerasAdapter(model_or_adapter, loss=loss, method=method)
