"""One stiffness measurement of a model on a probe set: engine → representations → math.

Shared by :class:`~keras_stiffness.callback.stiffness_callback.StiffnessCallback` and ``kstiff analyze`` so both write
the same thing. The model is reached only through the adapter protocol.
"""

from __future__ import annotations

from typing import Mapping, Optional

from keras_stiffness.engine.api import GramResult
from keras_stiffness.measure.adapters import StiffnessAdapter
from keras_stiffness.measure.config import MeasureConfig


def measure(
    adapter: StiffnessAdapter,
    probes,
    config: MeasureConfig = MeasureConfig(),
    tags: Optional[Mapping[str, float]] = None,
) -> tuple:
    """Measure stiffness once.

    Args:
        adapter: The model, through the adapter protocol.
        probes: A :class:`~keras_stiffness.data.probes.ProbeSet`.
        config: What to compute.
        tags: step, epoch, train_loss, val_loss, learning_rate, wall_time.

    Returns:
        ``(Measurement, GramResult)``.

    Example:
        >>> import keras
        >>> import numpy as np
        >>> from keras_stiffness.data.probes import ProbeSet
        >>> from keras_stiffness.measure.adapters import KerasAdapter
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        >>> model.compile(loss="sparse_categorical_crossentropy")
        >>> x, y = np.random.default_rng(0).normal(size=(40, 3)).astype("float32"), np.arange(40) % 2
        >>> probes = ProbeSet(x, y, per_class=5)
        >>> m, gram = measure(KerasAdapter(model), probes, MeasureConfig(bins=4, min_count=1))
        >>> gram.total.shape, -1.0 <= m.scalar("within", "train-train", "sign") <= 1.0
        ((10, 10), True)
    """
    from keras_stiffness.math.summarize import summarize

    gram: GramResult = adapter.gram(probes.x, probes.targets)  # the loss sees the labels as given
    reps = None
    if config.distances:
        reps = adapter.representations(probes.x, config.layers)
    m = summarize(
        gram.total,
        gram.per_layer,
        probes.y,
        probes.is_val,
        probes.n_classes,
        reps,
        measures=tuple(config.measures),
        metric=config.metric,
        bins=config.bins,
        min_count=config.min_count,
        tags=dict(tags or {}),
        save_gram=config.save_gram,
    )
    return m, gram
