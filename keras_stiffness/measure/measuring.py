"""One stiffness measurement of a model on a probe set: engine → representations → math.

Shared by :class:`~keras_stiffness.callback.stiffness_callback.StiffnessCallback` and ``kstiff analyze`` so both write
the same thing. The model is reached only through the adapter protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

from keras_stiffness.measure.adapters import LayerSelection, StiffnessAdapter
from keras_stiffness.engine.api import GramResult


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    """What a measurement computes (stored in the run file's configuration).

    Attributes:
        measures: Subset of ("sign", "cos").
        distances: Compute stiffness-vs-distance curves and critical lengths.
        layers: Representation spaces for distances: "all", "none" or layer names.
        metric: "cosine" (``1 − cos``) or "euclidean".
        bins: Number of distance bins.
        min_count: Fewest pairs for a bin to count (bins below are kept but marked by their count).
        save_gram: Store the raw ``(N, N)`` Gram in each row.
    """

    measures: Sequence[str] = ("sign", "cos")
    distances: bool = True
    layers: LayerSelection = "all"
    metric: str = "cosine"
    bins: int = 20
    min_count: int = 10
    save_gram: bool = False

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["measures"] = list(self.measures)
        out["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return out


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
        >>> m, gram = measure(KerasAdapter(model), probes, MeasureConfig(bins=10))  # doctest: +SKIP
        >>> m.scalar("within", "train-train", "sign")  # doctest: +SKIP
        0.98
    """
    from keras_stiffness.math.summarize import summarize

    gram: GramResult = adapter.gram(probes.x, probes.y)
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


def spaces_for(adapter: StiffnessAdapter, config: MeasureConfig) -> tuple:
    """The representation spaces a measurement will have: ``("input", *layers)`` or ``()``."""
    from keras_stiffness.measure.adapters import select_layers

    if not config.distances:
        return ()
    return ("input", *select_layers(adapter.layer_names(), config.layers))
