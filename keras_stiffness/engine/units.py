"""Split a Keras model into Gram units: the layers whose weights get one Gram block each.

A unit is a layer with a rule (Dense, Conv, ...), or a layer without one that owns trainable weights
(LSTM, MultiHeadAttention, a custom layer: measured by the exact per-example jacobian of its weights
alone). Models, and custom layers that only hold other layers, are containers: the walk goes inside.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from keras_stiffness import keras_compat
from keras_stiffness.engine.registry import find_rule
from keras_stiffness.engine.rules.base import Rule

FALLBACK = "fallback:jacobian"


@dataclasses.dataclass
class Unit:
    """One Gram block.

    Attributes:
        name: Unique name: the layer's name, suffixed ``:0``, ``:1``, ... in forward order when names collide.
        layer: The Keras layer.
        rule: Its rule, or ``None`` for the exact per-layer jacobian fallback.
        reason: Why the fallback is used (``None`` with a rule).
        variables: The trainable variables this block covers.
    """

    name: str
    layer: object
    rule: Optional[Rule]
    reason: Optional[str]
    variables: list

    @property
    def rule_name(self) -> str:
        return self.rule.name if self.rule is not None else FALLBACK


def _sublayers(layer) -> list:
    return keras_compat.direct_sublayers(layer)


def _own_variables(layer) -> list:
    inner = {id(v) for sub in _sublayers(layer) for v in sub.trainable_variables}
    return [v for v in layer.trainable_variables if id(v) not in inner]


def _is_container(layer) -> bool:
    import keras

    if isinstance(layer, keras.Model):
        return True
    builtin = keras_compat.is_builtin_layer(layer)
    return not builtin and bool(_sublayers(layer)) and not _own_variables(layer)


def model_units(model) -> List[Unit]:
    """The Gram units of ``model`` in tracking order (each shared layer once).

    Args:
        model: A built Keras model.

    Returns:
        Units covering every trainable variable exactly once.
    """
    units: List[Unit] = []
    seen = set()

    def visit(layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if not layer.trainable_variables:
            return
        rule, reason = find_rule(layer)
        if rule is not None:
            units.append(Unit(layer.name, layer, rule, None, list(layer.trainable_variables)))
            return
        if _is_container(layer):
            for sub in _sublayers(layer):
                visit(sub)
            own = _own_variables(layer)
            if own:
                units.append(Unit(layer.name, layer, None, "weights owned by a model itself", own))
            return
        units.append(Unit(layer.name, layer, None, reason, list(layer.trainable_variables)))

    visit(model)
    names = [u.name for u in units]
    seen_names: dict = {}
    for u in units:
        if names.count(u.name) > 1:
            k = seen_names.get(u.name, 0)
            seen_names[u.name] = k + 1
            u.name = f"{u.name}:{k}"
    return units
