"""The model-agnostic adapter protocol and its two implementations.

Everything above the engine (the measurement, the callback, the CLI) talks to a model only through
:class:`StiffnessAdapter`: per-layer Gram blocks for ``(x, y)``, representations of ``x`` at named
layers, the layer names and a short description. :class:`KerasAdapter` serves Keras models with the
structured engine; :class:`FunctionAdapter` serves any TensorFlow-differentiable per-example loss
through the exact jacobian route.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from keras_stiffness.engine.api import GramResult, check_losses, check_probes, parse_method, total_of

LayerSelection = Union[str, Sequence[str]]


@runtime_checkable
class StiffnessAdapter(Protocol):
    """What the toolkit needs from a model."""

    def layer_names(self) -> List[str]:
        """Names of the Gram blocks (layers with trainable weights), in forward order."""

    def gram(self, x: np.ndarray, y: np.ndarray) -> GramResult:
        """Exact Gram of per-example loss gradients, total and per layer."""

    def representations(self, x: np.ndarray, layers: LayerSelection = "all") -> Dict[str, np.ndarray]:
        """``{"input": (N, D), layer: (N, D_layer), ...}`` flattened, in forward order."""

    def describe(self) -> dict:
        """JSON-serializable description: name, parameter count, loss, summary text."""


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(len(a), -1).astype(np.float32, copy=False)


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


class KerasAdapter:
    """Adapter for a Keras model (Sequential, functional, subclassed), using the structured engine.

    Args:
        model: A built, single-output Keras model.
        loss: Defaults to the compiled loss (see :func:`keras_stiffness.gradient_gram`).
        method: ``"auto"``, ``"structured"`` or ``"jacobian"``.
        chunk_size: Probes per pass (default 1024).

    Example:
        >>> adapter = KerasAdapter(model)  # doctest: +SKIP
        >>> adapter.gram(x, y).total.shape  # doctest: +SKIP
        (100, 100)
        >>> list(adapter.representations(x))  # doctest: +SKIP
        ['input', 'dense', 'dense_1']
    """

    def __init__(self, model, *, loss=None, method: str = "auto", chunk_size: Optional[int] = None):
        from keras_stiffness.engine.api import check_model
        from keras_stiffness.engine.losses import resolve_loss

        check_model(model)
        self.model = model
        self.loss = loss
        self.method = parse_method(method).value
        self.chunk_size = chunk_size
        _, self.loss_name = resolve_loss(model, loss)
        self._order: Optional[List[str]] = None

    def _units(self):
        from keras_stiffness.engine.units import model_units

        return model_units(self.model)

    def layer_names(self) -> List[str]:
        if self._order is None:
            return [u.name for u in self._units()]
        return list(self._order)

    def gram(self, x: np.ndarray, y: np.ndarray) -> GramResult:
        from keras_stiffness.engine.api import gradient_gram

        result = gradient_gram(
            self.model, x, y, loss=self.loss, method=self.method, chunk_size=self.chunk_size
        )
        self._order = list(result.per_layer)
        return result

    def representations(self, x: np.ndarray, layers: LayerSelection = "all") -> Dict[str, np.ndarray]:
        from keras_stiffness.engine.api import CAPTURE_CHUNK
        from keras_stiffness.engine.capture import capture

        from keras_stiffness.engine.api import cast_to_model_dtype

        x = cast_to_model_dtype(self.model, np.asarray(x))
        units = self._units()
        _, _, outputs = capture(
            self.model, units, x, None, None, chunk_size=self.chunk_size or CAPTURE_CHUNK, grads=False
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
            "layers": [{"name": u.name, "class": type(u.layer).__name__, "rule": u.rule_name} for u in units],
            "summary": "\n".join(lines),
        }


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
        chunk_size: Probes per jacobian chunk is chosen by memory; this caps forward passes.

    Example:
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

    def gram(self, x: np.ndarray, y: np.ndarray) -> GramResult:
        from keras_stiffness.engine.fallback import jacobian_grams

        x, y = check_probes(x, y)
        per_layer, losses = jacobian_grams(
            lambda lo, hi: self.per_example_loss(x[lo:hi], y[lo:hi]), self.groups, len(x)
        )
        check_losses(losses, getattr(self.per_example_loss, "__name__", "per_example_loss"))
        rules = {name: "jacobian" for name in per_layer}
        return GramResult(
            total=total_of(per_layer, len(x)), per_layer=per_layer, rules=rules, method="jacobian",
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


def as_adapter(model_or_adapter, **kwargs) -> StiffnessAdapter:
    """A Keras model becomes a :class:`KerasAdapter`; an adapter is returned as is."""
    if isinstance(model_or_adapter, (KerasAdapter, FunctionAdapter)):
        return model_or_adapter
    if all(hasattr(model_or_adapter, m) for m in ("gram", "representations", "layer_names")):
        return model_or_adapter
    return KerasAdapter(model_or_adapter, **kwargs)
