"""Every private Keras API and every instance patch the package relies on, in one place.

Nothing else in ``keras_stiffness`` touches Keras internals: it calls the functions below. Each one
states, in a ``# Why:`` line, why it is needed and why it is safe. ``tests/test_keras_compat.py``
checks every assumption directly against the installed Keras and fails naming it when an upgrade
breaks one. The assumptions (also listed in :data:`ASSUMPTIONS`):

- ``flatten_layers``: ``Layer._flatten_layers(include_self, recursive)`` exists and lists a layer's
  direct sublayers in tracking order (``recursive=False``), or the layer and every nested sublayer,
  each once (``include_self=True, recursive=True``). Used by :func:`direct_sublayers` and
  :func:`all_layers`.
- ``builtin_layer_modules``: Keras' own layer classes are defined in modules under ``keras.``
  (``keras.src...``; ``tf_keras.`` for Keras 2), user layers are not. Used by
  :func:`is_builtin_layer`.
- ``build_shapes_dict``: a model built with ``build(shape)``, by a first call, or from a saved
  ``.keras`` build config (``build_from_config``), records that shape in
  ``model._build_shapes_dict["input_shape"]`` (batch axis included). Used by
  :func:`build_input_shape`.
- ``loss_function_wrapper``: ``keras.src.losses.losses.LossFunctionWrapper`` (not exported publicly)
  is what ``compile`` wraps a plain loss function in, and its ``call`` aligns label and output ranks
  then returns per-example values. Used by :func:`wrap_loss_function`.
- ``instance_call_patch``: ``Layer.__call__`` runs ``self.call`` looked up on the instance, so a
  ``call`` set on the instance (bypassing Keras' ``__setattr__`` tracking) intercepts ``layer(x)``
  and deleting it restores the class method. Used by :func:`patched_attribute` (capture pass).
- ``instance_activation_patch``: Dense, EinsumDense and the convolutions read ``self.activation`` at call time
  and skip it when ``None``. Used by :func:`patched_attribute` (pre-activation taps).
- ``instance_batch_hook``: ``CallbackList`` calls each callback's ``on_train_batch_end`` by
  attribute lookup, synchronously, after the optimizer step; so a hook set on one callback instance
  runs for that instance only, and the class default (marked by Keras' ``utils.default``) stays
  untouched. Used by :func:`install_batch_hook`.
- ``untracked_attribute``: an attribute set with ``object.__setattr__`` whose value is neither a
  Keras saveable object nor a list, dict or tuple is invisible to Keras: it is not tracked as layer
  state, and ``model.save`` (which walks a model's attributes and descends only into saveables and
  those containers) neither writes nor expects it. Used by :func:`untracked_attribute` (the engine's
  per-model cache).

Keras is imported lazily inside the functions, so importing this module is cheap. This module is
the bottom layer of the package: it imports no other ``keras_stiffness`` module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

COMPAT_MODULE = "keras_stiffness/keras_compat.py"


class Assumption(NamedTuple):
    """One assumption about Keras internals.

    Attributes:
        name: Short identifier, used in test failure messages.
        used_by: The ``keras_compat`` function(s) relying on it.
        reason: Why the package needs it and why it is safe.
    """

    name: str
    used_by: str
    reason: str


#: Every assumption about Keras internals the package makes (one test each).
ASSUMPTIONS: tuple[Assumption, ...] = (
    Assumption(
        "flatten_layers",
        "direct_sublayers, all_layers",
        "Keras 3 has no public sublayer listing; _flatten_layers is what Keras itself uses to walk "
        "layers and only reads the tracked _layers list.",
    ),
    Assumption(
        "builtin_layer_modules",
        "is_builtin_layer",
        "Tells Keras' own layers (units even when they hold sublayers) from user containers; only "
        "reads type(layer).__module__.",
    ),
    Assumption(
        "build_shapes_dict",
        "build_input_shape",
        "A subclassed model without an Input declares its input shape nowhere else (model.inputs "
        "fails); the dict is only read.",
    ),
    Assumption(
        "loss_function_wrapper",
        "wrap_loss_function",
        "Per-example losses must match what compile computes, including label/output rank "
        "alignment; the class is only instantiated, never modified.",
    ),
    Assumption(
        "instance_call_patch",
        "patched_attribute (capture pass, layer.call)",
        "Taps each layer's inputs/outputs without subclassing user layers; the instance attribute "
        "lives only for the pass and is removed in finally.",
    ),
    Assumption(
        "instance_activation_patch",
        "patched_attribute (pre-activation forward, layer.activation)",
        "Gives the pre-activation output the Gram rules need from the layer's own call; restored "
        "in finally, weights and tracking untouched.",
    ),
    Assumption(
        "untracked_attribute",
        "untracked_attribute (engine.model_cache)",
        "Keeps what the engine learns about a model (units, traced graphs) with the model, so it dies "
        "with it; a plain object set past __setattr__ is neither layer state nor saved.",
    ),
    Assumption(
        "instance_batch_hook",
        "install_batch_hook",
        "Batch hooks only for callbacks with a step schedule; an instance attribute affects no "
        "other callback and Keras calls it synchronously after each step.",
    ),
)

_MISSING = object()


def broken(name: str, detail: str) -> str:
    """The message for a broken assumption: names it and points here.

    Args:
        name: The assumption's name (see :data:`ASSUMPTIONS`).
        detail: What changed.

    Returns:
        ``"Keras upgrade broke assumption <name>: <detail>; see keras_stiffness/keras_compat.py"``.
    """
    return f"Keras upgrade broke assumption {name}: {detail}; see {COMPAT_MODULE}"


def _flatten(layer: Any, include_self: bool, recursive: bool) -> list[Any]:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        raise RuntimeError(broken("flatten_layers", f"{type(layer).__name__} has no _flatten_layers"))
    return list(flatten(include_self=include_self, recursive=recursive))


def direct_sublayers(layer: Any) -> list[Any]:
    """The layers tracked directly by ``layer`` (not nested deeper), in tracking order.

    Args:
        layer: A Keras layer or model.

    Returns:
        Its direct sublayers, each once; empty for a leaf layer.
    """
    # Why: Keras 3 has no public "direct sublayers"; _flatten_layers only reads the tracked list.
    return _flatten(layer, include_self=False, recursive=False)


def all_layers(layer: Any) -> list[Any]:
    """``layer`` itself followed by every nested sublayer, each once.

    Args:
        layer: A Keras layer or model.

    Returns:
        ``[layer, *every sublayer at any depth]``.
    """
    # Why: the recursive walk Keras itself uses (e.g. for losses); read-only.
    return _flatten(layer, include_self=True, recursive=True)


def is_builtin_layer(layer: Any) -> bool:
    """True when ``layer``'s class is one of Keras' own (Keras 3, or ``tf_keras``).

    Args:
        layer: Any object.

    Returns:
        Whether its class is defined in a module under ``keras.`` or ``tf_keras.``.
    """
    # Why: Keras exports no "is built-in" flag; the defining module is read-only and stable.
    module = type(layer).__module__ or ""
    return module.startswith(("keras.", "tf_keras."))


def build_input_shape(model: Any) -> Any:
    """The input shape ``model`` was built with (batch axis included), or None when unknown.

    Args:
        model: A Keras model, possibly subclassed and without an ``Input``.

    Returns:
        ``model._build_shapes_dict["input_shape"]`` (e.g. ``(None, 8, 8, 1)``), or None when the model
        was not built or was built through keyword arguments of another name.
    """
    # Why: a subclassed model keeps its build shape only here (model.inputs fails); read-only.
    build = getattr(model, "_build_shapes_dict", None) or {}
    return build.get("input_shape") if isinstance(build, dict) else None


def wrap_loss_function(fn: Callable) -> Callable:
    """``fn``'s per-example values exactly as ``compile`` computes them.

    Args:
        fn: A loss function ``(y_true, y_pred) -> values`` (e.g. from ``keras.losses.get``).

    Returns:
        ``LossFunctionWrapper(fn).call``: aligns the ranks of labels and outputs (e.g. ``(n, 1)``
        integer labels), then calls ``fn``; no reduction over the batch.
    """
    # Why: compile wraps plain functions in this class (not exported); we only instantiate it.
    from keras.src.losses.losses import LossFunctionWrapper

    return LossFunctionWrapper(fn).call


@contextlib.contextmanager
def patched_attribute(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``obj.name = value`` on the instance for the ``with`` block, then restore it exactly.

    The attribute is written with ``object.__setattr__``, bypassing Keras' (and TensorFlow's)
    ``__setattr__`` tracking: a plain assignment would register the value as tracked state of the
    layer (a sublayer, a checkpoint dependency) and the restore could not undo that. On exit the
    previous instance value is put back, or the instance attribute is deleted when there was none
    (so the class attribute, e.g. the ``call`` method, shows through again), even on error.

    Args:
        obj: The instance (a Keras layer).
        name: The attribute, e.g. ``"call"`` or ``"activation"``.
        value: The temporary value.

    Yields:
        Nothing; the attribute is patched inside the block.
    """
    # Why: instance-only, untracked, and undone in finally: the layer is left exactly as found.
    previous = obj.__dict__.get(name, _MISSING)
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        if previous is _MISSING:
            object.__delattr__(obj, name)
        else:
            object.__setattr__(obj, name, previous)


def untracked_attribute(obj: Any, name: str, make: Callable[[], Any]) -> Any:
    """``obj.name``, first set to ``make()`` past Keras' ``__setattr__`` tracking when missing.

    The value must be a plain object (not a list, dict or tuple, not a Keras layer or other saveable),
    so that Keras' saving never sees it.

    Args:
        obj: The instance (a Keras model).
        name: The attribute.
        make: Builds the value on first use.

    Returns:
        The attribute's value.
    """
    # Why: kept on the instance only, untracked, never saved; it is collected with the model.
    value = obj.__dict__.get(name, _MISSING)
    if value is _MISSING:
        value = make()
        object.__setattr__(obj, name, value)
    return value


def install_batch_hook(callback: Any, method: Callable) -> None:
    """Make ``method`` this callback instance's ``on_train_batch_end`` (other instances unaffected).

    Keras' ``CallbackList`` calls ``callback.on_train_batch_end(batch, logs)`` for every callback,
    by attribute lookup, so the instance attribute shadows the class default. The bound method is
    not marked with Keras' ``utils.default``, so on thread-safe backends ``CallbackList`` also keeps
    dispatch synchronous for it (the hook reads the model's current weights).

    Args:
        callback: A ``keras.callbacks.Callback`` instance.
        method: ``(batch, logs=None) -> None``, usually a bound method of ``callback``.
    """
    # Why: batch hooks only when asked for; a plain instance attribute, no class is modified.
    callback.on_train_batch_end = method
