"""Layer class → Gram rule: one table, looked up along the class's MRO.

Subclasses of a registered layer inherit its rule (a user's ``MyDense(Dense)`` is still a Dense), and
:func:`register_rule` adds or overrides entries for custom layers.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Type

from keras_stiffness.engine.rules.base import Rule

_TABLE: Dict[type, Rule] = {}
_BUILTINS_LOADED = False
#: Bumped by every :func:`register_rule`, so cached per-model facts (units and rules) are rebuilt.
_VERSION = [0]


def _builtin_table() -> Dict[type, Rule]:
    from keras import layers

    from keras_stiffness.engine.rules.conv import CONV, DEPTHWISE, SEPARABLE
    from keras_stiffness.engine.rules.dense import DENSE
    from keras_stiffness.engine.rules.einsum import EINSUM
    from keras_stiffness.engine.rules.embedding import EMBEDDING
    from keras_stiffness.engine.rules.normalization import NORMALIZATION
    from keras_stiffness.engine.rules.recurrent import RECURRENT

    return {
        layers.Dense: DENSE,
        layers.EinsumDense: EINSUM,
        layers.Conv1D: CONV,
        layers.Conv2D: CONV,
        layers.Conv3D: CONV,
        layers.DepthwiseConv1D: DEPTHWISE,
        layers.DepthwiseConv2D: DEPTHWISE,
        layers.SeparableConv1D: SEPARABLE,
        layers.SeparableConv2D: SEPARABLE,
        layers.Embedding: EMBEDDING,
        layers.BatchNormalization: NORMALIZATION,
        layers.LayerNormalization: NORMALIZATION,
        layers.SimpleRNN: RECURRENT,
        layers.LSTM: RECURRENT,
        layers.GRU: RECURRENT,
    }


def _table() -> Dict[type, Rule]:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        for cls, rule in _builtin_table().items():
            _TABLE.setdefault(cls, rule)
        _BUILTINS_LOADED = True
    return _TABLE


def register_rule(layer_class: Type, rule: Rule) -> None:
    """Use ``rule`` for ``layer_class`` and its subclasses (overrides a built-in entry).

    Args:
        layer_class: A Keras layer class.
        rule: A :class:`~keras_stiffness.engine.rules.base.Rule`.

    Raises:
        TypeError: If ``layer_class`` is not a class or ``rule`` is not a ``Rule``.

    Example:
        >>> from keras_stiffness.engine.rules.base import Rule
        >>> register_rule(MyScale, Rule("my_scale", gram=my_scale_gram))  # doctest: +SKIP
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"register_rule expects a layer class; received {layer_class!r}.")
    if not isinstance(rule, Rule):
        raise TypeError(
            f"register_rule expects a keras_stiffness Rule; received {type(rule).__name__}. "
            "Build one with Rule(name, gram=fn)."
        )
    _table()[layer_class] = rule
    _VERSION[0] += 1


def registry_version() -> int:
    """How many rules have been registered so far (a cache key: units depend on the table)."""
    return _VERSION[0]


def find_rule(layer) -> Tuple[Optional[Rule], Optional[str]]:
    """The rule for ``layer`` by MRO, and why it is not used when the layer's config rules it out.

    Returns:
        ``(rule, None)`` when a rule applies, ``(None, reason)`` otherwise.
    """
    table = _table()
    for cls in type(layer).__mro__:
        rule = table.get(cls)
        if rule is not None:
            reason = rule.unsupported(layer)
            if reason:
                return None, f"{rule.name} rule does not apply: {reason}"
            return rule, None
    return None, "no Gram rule is registered for its class"
