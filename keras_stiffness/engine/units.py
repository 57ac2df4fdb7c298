"""Split a Keras model into Gram units: the layers whose weights get one Gram block each.

A unit is a layer with a rule (Dense, Conv, ...), or a layer without one that owns trainable weights
(a stateful RNN, a custom layer: measured by the exact per-example jacobian of its weights
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


def _walked_builtins() -> tuple:
    """Keras' own layers that only hold other layers and call them through ``__call__``, so the walk
    goes inside and their sublayers get their own rules (attention projections, wrapped RNNs)."""
    from keras import layers

    return (layers.MultiHeadAttention, layers.Bidirectional, layers.TimeDistributed)


def _is_container(layer) -> bool:
    import keras

    if isinstance(layer, keras.Model):
        return True
    if not _sublayers(layer) or _own_variables(layer):
        return False
    return not keras_compat.is_builtin_layer(layer) or isinstance(layer, _walked_builtins())


def _shared_variable_units(units: List[Unit]) -> List[Unit]:
    """Variables used by several units (tied weights) get one unit of their own.

    The per-example gradient of a shared variable is the sum of every layer's contribution, and its
    Gram has the cross terms between them; no per-layer rule sees both, so these variables are
    measured by the exact per-example jacobian of the whole loss, and left out of each layer's block.
    """
    owners: dict = {}
    for u in units:
        for v in u.variables:
            owners.setdefault(id(v), (v, []))[1].append(u)
    shared = [(v, us) for v, us in owners.values() if len({id(u) for u in us}) > 1]
    extra = []
    for v, us in shared:
        for u in us:
            u.variables = [w for w in u.variables if w is not v]
        names = ", ".join(dict.fromkeys(u.name for u in us))
        path = str(getattr(v, "path", None) or v.name)
        extra.append(Unit(f"shared:{path}", None, None, f"variable shared by layers {names}", [v]))
    return [u for u in units if u.variables] + extra


def trainable_blocks(unit: Unit, blocks: dict) -> dict:
    """The trainable-variable contract, in one place: a block for exactly the unit's trainable variables.

    Rules may return blocks for every weight of their layer; here the blocks of frozen (or shared,
    measured elsewhere) weights are dropped, and a trainable variable without a block is an error,
    never a silent omission.

    Raises:
        RuntimeError: The rule gave no block for one of the unit's trainable variables.
    """
    wanted = {v.name for v in unit.variables}
    missing = sorted(wanted - set(blocks))
    if missing:
        raise RuntimeError(
            f"The Gram rule {unit.rule_name!r} of layer {unit.name!r} gave no block for its trainable "
            f"variable(s) {missing}; expected one per trainable variable. This is a bug in the rule: "
            "report it, and use method='jacobian' meanwhile."
        )
    return {name: g for name, g in blocks.items() if name in wanted}


def model_units(model) -> List[Unit]:
    """The Gram units of ``model`` in tracking order (each shared layer once).

    Args:
        model: A built Keras model.

    Returns:
        Units covering every trainable variable exactly once (a variable shared between layers gets a
        unit of its own, see :func:`_shared_variable_units`).
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
    units = _shared_variable_units(units)
    names = [u.name for u in units]
    seen_names: dict = {}
    for u in units:
        if names.count(u.name) > 1:
            k = seen_names.get(u.name, 0)
            seen_names[u.name] = k + 1
            u.name = f"{u.name}:{k}"
    return units
