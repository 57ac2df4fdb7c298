"""Per-example losses: turn whatever the user gave (a compiled loss, a Keras Loss object of any
reduction, a loss name, a callable) into ``(y_true, y_pred) -> (n,)``."""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

from keras_stiffness import keras_compat
from keras_stiffness.validation import check_label_range


def describe_loss(loss) -> str:
    """A short human-readable name for a loss."""
    if isinstance(loss, str):
        return loss
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    return str(name or type(loss).__name__)


def loss_identity(loss) -> tuple:
    """What makes two losses give the same per-example values, as ``(key, anchor)`` for caching.

    A loss name, or one of Keras' own ``Loss`` classes with its config, is compared by value (a fresh
    ``SparseCategoricalCrossentropy()`` per call is the same loss); anything else (a function, a
    user's ``Loss`` subclass) by identity: ``anchor`` is the object itself, for the cache to hold.

    Example:
        >>> import keras
        >>> a = loss_identity(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> a == loss_identity(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        True
        >>> a == loss_identity(keras.losses.SparseCategoricalCrossentropy())
        False
    """
    import keras

    if loss is None or isinstance(loss, str):
        return ("value", loss), None
    if isinstance(loss, keras.losses.Loss) and keras_compat.is_builtin_layer(loss):  # a Keras class
        try:
            config = repr(sorted(loss.get_config().items()))
        except Exception:  # noqa: BLE001 - no usable config: compare by identity
            return ("object",), loss
        return ("value", type(loss).__name__, config), None
    return ("object",), loss


def resolve_loss(model, loss=None) -> Tuple[Callable, str]:
    """The per-example loss function and its name.

    Args:
        model: A Keras model (its compiled loss is used when ``loss`` is None), or None.
        loss: A Keras ``Loss`` (its reduction is ignored: ``call`` gives per-example values), a loss
            name such as ``"sparse_categorical_crossentropy"``, or a callable
            ``(y_true, y_pred) -> per-example losses``.

    Raises:
        ValueError: No loss given and the model has none compiled.
        TypeError: A loss of an unsupported kind (e.g. a dict or list for several outputs).
    """
    import keras

    if loss is None:
        loss = getattr(model, "loss", None) if model is not None else None
        if loss is None:
            raise ValueError(
                "Received a model with no compiled loss and loss=None; expected a loss to "
                "differentiate. Fix: pass loss='sparse_categorical_crossentropy' (or a Keras Loss, or "
                "a function (y_true, y_pred) -> per-example losses), or compile the model with a loss."
            )
    if isinstance(loss, (dict, list, tuple)):
        raise TypeError(
            f"Received loss of type {type(loss).__name__} (one loss per output); expected a single "
            "loss for a single-output model. Fix: pass one loss, or a callable combining the outputs "
            "into one per-example loss."
        )
    name = describe_loss(loss)
    if isinstance(loss, str):
        try:
            fn = _wrap(keras.losses.get(loss))
        except ValueError as exc:
            raise ValueError(
                f"Received loss={loss!r}, which Keras does not know; expected a Keras loss name such "
                "as 'sparse_categorical_crossentropy', 'categorical_crossentropy', "
                "'binary_crossentropy' or 'mse'."
            ) from exc
    elif isinstance(loss, keras.losses.Loss):
        fn = loss.call
    elif callable(loss):
        fn = _wrap(loss)
    else:
        raise TypeError(
            f"Received loss of type {type(loss).__name__}; expected a Keras Loss, a loss name or a "
            "callable (y_true, y_pred) -> per-example losses."
        )

    def per_example(y_true, y_pred):
        import tensorflow as tf

        values = fn(tf.convert_to_tensor(y_true), y_pred)
        values = tf.convert_to_tensor(values)
        if values.shape.rank == 0:
            raise ValueError(
                f"The loss {name!r} returned a single scalar; expected one value per example. "
                "Fix: pass a Keras Loss object or a function that does not reduce over the batch."
            )
        if values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        return values

    return per_example, name


def _wrap(fn) -> Callable:
    """A loss function's per-example values exactly as ``compile`` would use it: Keras wraps plain
    functions in ``LossFunctionWrapper``, whose ``call`` aligns label and output ranks first (Keras
    3 does not export the class publicly)."""
    return keras_compat.wrap_loss_function(fn)


def check_labels(y: np.ndarray, out_shape: tuple, loss_name: str) -> None:
    """Check labels against the model's output shape ``(n, ..., k)``.

    Integer class labels (``y`` of shape ``(n,)`` or ``(n, 1)`` with ``k > 1`` outputs) must be in
    ``[0, k)``; otherwise ``y`` must have the output's shape.

    Raises:
        ValueError: With what was received and what was expected.
    """
    k = out_shape[-1] if len(out_shape) > 1 else 1
    sparse = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and k > 1)
    if sparse and k > 1 and len(out_shape) == 2:
        flat = y.reshape(-1)
        if not np.all(np.isfinite(flat)) or not np.all(np.equal(np.mod(flat, 1), 0)):
            raise ValueError(
                f"Received non-integer class labels for a model with {k} outputs and loss "
                f"{loss_name!r}; expected integer labels in [0, {k})."
            )
        check_label_range(
            flat.astype(np.int64),
            k,
            "labels",
            fix=f"The model has {k} outputs: check that the probes' classes match its output layer.",
        )
        return
    if tuple(y.shape[1:]) != tuple(out_shape[1:]) and not (y.ndim == 1 and k == 1):
        raise ValueError(
            f"Received labels of shape {y.shape}; expected shape (N, {', '.join(map(str, out_shape[1:]))}) "
            f"to match the model's output, or integer class labels of shape (N,)."
        )
