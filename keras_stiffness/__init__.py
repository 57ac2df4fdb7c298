"""keras_stiffness: measure stiffness of TensorFlow/Keras models during and after training.

Stiffness (Fort et al., arXiv 1901.09491) asks how a gradient step on one example changes the loss on
another: the sign and the cosine of ``g_i · g_j`` for per-example loss gradients over all weights.

The public names are imported lazily, so ``import keras_stiffness.math.stiffness`` (NumPy only) never
imports TensorFlow.

Example:
    >>> import keras
    >>> import numpy as np
    >>> import keras_stiffness as ks
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> model.compile(loss="sparse_categorical_crossentropy")
    >>> x, y = np.random.default_rng(0).normal(size=(6, 3)).astype("float32"), np.array([0, 1] * 3)
    >>> gram = ks.gradient_gram(model, x, y)
    >>> gram.total.shape
    (6, 6)
"""

from __future__ import annotations

import importlib

from keras_stiffness.version import __version__

_LAZY = {
    "gradient_gram": "keras_stiffness.engine.api",
    "gram_blocks": "keras_stiffness.engine.api",
    "GramResult": "keras_stiffness.engine.api",
    "Method": "keras_stiffness.engine.api",
    "register_rule": "keras_stiffness.engine.registry",
    "KerasAdapter": "keras_stiffness.measure.adapters",
    "FunctionAdapter": "keras_stiffness.measure.adapters",
    "ProbeSet": "keras_stiffness.data.probes",
    "StiffnessCallback": "keras_stiffness.callback.stiffness_callback",
    "open_run": "keras_stiffness.store.reader",
    "Run": "keras_stiffness.store.reader",
    "RunWriter": "keras_stiffness.store.writer",
    "RunInfo": "keras_stiffness.store.layout",
    "RunFileError": "keras_stiffness.store.layout",
    "MeasureConfig": "keras_stiffness.measure.measuring",
    "measure": "keras_stiffness.measure.measuring",
    "Measurement": "keras_stiffness.math.record",
    "summarize": "keras_stiffness.math.summarize",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_stiffness' has no attribute {name!r}")


def __dir__():
    return __all__
