"""keras_stiffness: measure stiffness of TensorFlow/Keras models during and after training.

Stiffness (Fort et al., arXiv 1901.09491) asks how a gradient step on one example changes the loss on
another: the sign and the cosine of ``g_i · g_j`` for per-example loss gradients over all weights.

The public names are imported lazily, so ``import keras_stiffness.stiffness`` (NumPy only) never
imports TensorFlow.

Example:
    >>> import keras_stiffness as ks  # doctest: +SKIP
    >>> gram = ks.gradient_gram(model, x, y)  # doctest: +SKIP
    >>> gram.total.shape  # doctest: +SKIP
    (500, 500)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "gradient_gram": "keras_stiffness.engine.api",
    "GramResult": "keras_stiffness.engine.api",
    "Method": "keras_stiffness.engine.api",
    "register_rule": "keras_stiffness.engine.registry",
    "KerasAdapter": "keras_stiffness.adapters",
    "FunctionAdapter": "keras_stiffness.adapters",
    "ProbeSet": "keras_stiffness.probes",
    "StiffnessCallback": "keras_stiffness.callback",
    "open_run": "keras_stiffness.store",
    "RunWriter": "keras_stiffness.store",
    "RunInfo": "keras_stiffness.store",
    "RunFileError": "keras_stiffness.store",
    "MeasureConfig": "keras_stiffness.measure",
    "measure": "keras_stiffness.measure",
    "Measurement": "keras_stiffness.measurement",
    "summarize": "keras_stiffness.summary",
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
