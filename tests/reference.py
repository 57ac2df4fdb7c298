"""A deliberately naive reference for the Gram matrix of per-example gradients.

One example at a time: ``tf.GradientTape`` gradient of that example's loss (model called with
``training=False`` on ``x[i:i+1]``, every input sliced alike for a nested ``x``), every trainable
variable's gradient flattened (``None`` → zeros) into one float64 vector ``g_i``; then ``G = g gᵀ``.
Nothing here is shared with the engine, so the engine's rules, capture pass and jacobian path are all
checked against plain autodiff.

The loss of one example is the Keras loss evaluated on a batch of one, the way ``fit`` evaluates it: a
loss name is wrapped like ``compile`` wraps it, and any reduction of a batch of one is that example's
loss. Regularization (``model.losses``) is never added.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import keras
import numpy as np
import tensorflow as tf

#: Loss names as ``compile`` understands them → the Keras ``Loss`` class it wraps them in.
LOSS_CLASSES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
    "mse": keras.losses.MeanSquaredError,
}


@dataclasses.dataclass
class Reference:
    """The naive result.

    Attributes:
        total: ``(N, N)`` float64 Gram matrix.
        grads: ``(N, P)`` float64 per-example gradients (all trainable variables, in model order).
        losses: ``(N,)`` per-example losses.
        per_variable: Variable path → ``(N, N)`` Gram block of that variable alone.
    """

    total: np.ndarray
    grads: np.ndarray
    losses: np.ndarray
    per_variable: Dict[str, np.ndarray]

    def block(self, layer_name: str) -> np.ndarray:
        """Sum of the blocks of the variables whose path goes through a layer called ``layer_name``
        (``"shared:PATH"`` names the block of the variable ``PATH`` shared between layers)."""
        if layer_name.startswith("shared:"):
            return self.per_variable[layer_name.removeprefix("shared:")]
        return sum(g for path, g in self.per_variable.items() if layer_name in path.split("/"))


def single_example_loss(loss, model):
    """``(y_true, y_pred) -> scalar`` for a batch of one example."""
    if loss is None:
        loss = model.loss
    if isinstance(loss, str):
        loss = LOSS_CLASSES[loss](reduction="sum")
    return lambda y_true, y_pred: tf.reduce_sum(loss(y_true, y_pred))


def reference_gram(model, x, y, loss=None) -> Reference:
    """Per-example loop of tape gradients.

    Args:
        model: A built Keras model.
        x, y: Probes and labels (first axis = examples); ``x`` may be a dict/list of arrays (several
            inputs), each sliced per example.
        loss: A Keras ``Loss``, a loss name, or ``None`` for the model's compiled loss.
    """
    f = single_example_loss(loss, model)
    variables = model.trainable_variables
    rows, losses = [], []
    for i in range(len(y)):
        xi = tf.nest.map_structure(lambda leaf, i=i: leaf[i : i + 1], x)  # every input of a nested x
        with tf.GradientTape() as tape:
            value = f(y[i : i + 1], model(xi, training=False))
        grads = tape.gradient(value, variables)
        rows.append(
            [
                np.zeros(int(np.prod(v.shape)))
                if g is None
                else np.asarray(tf.convert_to_tensor(g), np.float64).reshape(-1)
                for v, g in zip(variables, grads)
            ]
        )
        losses.append(float(value))
    per_variable = {}
    for k, v in enumerate(variables):
        gk = np.stack([r[k] for r in rows])
        per_variable[v.path] = gk @ gk.T
    g = np.stack([np.concatenate(r) for r in rows])
    return Reference(total=g @ g.T, grads=g, losses=np.array(losses), per_variable=per_variable)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``‖a − b‖_F / ‖b‖_F``."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
