"""What a Gram computation learns about a model once and reuses on the next call.

A callback measures the same model on the same kind of probes every few epochs. Finding its units,
checking its output shape, sizing one probe's capture and tracing its capture pass give the same
answers each time, so they are kept with the model, keyed by everything they depend on: the loss,
the probes' shapes and dtypes, the trainable variables (freezing a layer changes its units), the
rule registry and the options. Nothing here depends on the weights' values.

The cache is an attribute of the model, so it lives and dies with it. It is a plain object, not a
list or dict, so Keras' saving (which walks a model's attributes) does not see it.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Tuple

from keras_stiffness import keras_compat

#: Name of the model attribute holding its cache.
ATTRIBUTE = "_keras_stiffness_cache"
#: Entries kept per model (the oldest goes first).
MAX_ENTRIES = 8


class ModelCache:
    """Entries of one model: ``key -> (anchors, value)``, at most :data:`MAX_ENTRIES`.

    Example:
        >>> cache = ModelCache()
        >>> loss = object()
        >>> cache.get(("facts",), (loss,), lambda: 42), cache.get(("facts",), (loss,), lambda: 0)
        (42, 42)
    """

    def __init__(self) -> None:
        self._entries: "collections.OrderedDict[tuple, Tuple[tuple, Any]]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple, anchors: tuple, build: Callable[[], Any]) -> Any:
        """The value for ``key`` and the objects ``anchors`` (compared by identity), built once.

        The anchors are held, so their ids cannot be reused by other objects while the entry lives.
        """
        full = tuple(key) + tuple(id(a) for a in anchors)
        entry = self._entries.get(full)
        if entry is not None and all(a is b for a, b in zip(entry[0], anchors)):
            self._entries.move_to_end(full)
            return entry[1]
        value = build()
        self._entries[full] = (tuple(anchors), value)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


def model_cache(model) -> ModelCache:
    """The cache attached to ``model`` (created on first use, outside Keras' attribute tracking)."""
    return keras_compat.untracked_attribute(model, ATTRIBUTE, ModelCache)


def variables_key(model) -> tuple:
    """Identity of the model's trainable variables, in order: changes when a layer is frozen or
    unfrozen, or gains weights (LoRA, quantization)."""
    return tuple(id(v) for v in model.trainable_variables)


def cached_units(model) -> list:
    """The model's Gram units (``engine.units.model_units``), found once per rule table and set of
    trainable variables."""
    from keras_stiffness.engine.registry import registry_version
    from keras_stiffness.engine.units import model_units

    key = ("units", registry_version(), variables_key(model))
    return model_cache(model).get(key, (), lambda: model_units(model))


def forward_capture(model, units: list):
    """The model's forward-only capture (representations), traced once repeated (see ``engine.traced``)."""
    from keras_stiffness.engine.traced import TracedCapture

    return model_cache(model).get(("forward",), (units,), lambda: TracedCapture(model, units, None, grads=False))
