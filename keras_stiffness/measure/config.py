"""What a measurement computes: :class:`MeasureConfig`, validated once when it is made."""

from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple, Union

from keras_stiffness.math.distance import METRICS
from keras_stiffness.math.stiffness import check_measures
from keras_stiffness.validation import check_choice, check_int, check_names

#: Which layers' representation spaces get distance curves: "all", "none" or layer names.
LayerSelection = Union[str, Sequence[str]]


def check_layer_selection(layers: LayerSelection) -> Union[str, Tuple[str, ...]]:
    """``"all"``, ``"none"``, or a tuple of layer names (a single name becomes a one-name tuple).

    Example:
        >>> check_layer_selection("all"), check_layer_selection(["dense"])
        ('all', ('dense',))
    """
    if isinstance(layers, str):
        return layers if layers in ("all", "none") else (layers,)
    try:
        return check_names(layers, "layers")
    except TypeError as exc:
        raise TypeError(f"Received: layers={layers!r}; expected 'all', 'none' or a sequence of layer names.") from exc


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    """What a measurement computes (stored in the run file's configuration), checked on creation.

    Attributes:
        measures: Subset of ("sign", "cos"), kept in that order.
        distances: Compute stiffness-vs-distance curves and critical lengths.
        layers: Representation spaces for distances: "all", "none" or layer names.
        metric: "cosine" (``1 − cos``) or "euclidean".
        bins: Number of distance bins.
        min_count: Fewest pairs for a bin to count (bins below are kept but marked by their count).
        save_gram: Store the raw ``(N, N)`` Gram in each row (written block by block as it is formed).
        gram_dtype: How ``save_gram`` stores it: ``"float64"`` (exact) or ``"float32"`` (half the size).

    Raises:
        ValueError: An unknown measure or metric, or a count below 1.
        TypeError: A count that is not an integer, or layers that are not names.

    Example:
        >>> MeasureConfig(measures=["cos", "sign"], bins=10).measures
        ('sign', 'cos')
        >>> MeasureConfig(metric="manhattan")
        Traceback (most recent call last):
        ...
        ValueError: Received: metric='manhattan'; expected one of 'cosine', 'euclidean'.
    """

    measures: Sequence[str] = ("sign", "cos")
    distances: bool = True
    layers: LayerSelection = "all"
    metric: str = "cosine"
    bins: int = 20
    min_count: int = 10
    save_gram: bool = False
    gram_dtype: str = "float64"

    def __post_init__(self) -> None:
        from keras_stiffness.store.layout import check_gram_dtype

        fields = {
            "measures": check_measures(self.measures),
            "distances": bool(self.distances),
            "layers": check_layer_selection(self.layers),
            "metric": check_choice(self.metric, "metric", METRICS),
            "bins": check_int(self.bins, "bins"),
            "min_count": check_int(self.min_count, "min_count"),
            "save_gram": bool(self.save_gram),
            "gram_dtype": check_gram_dtype(self.gram_dtype),
        }
        for name, value in fields.items():  # frozen: the canonical values are set once, here
            object.__setattr__(self, name, value)

    def summary_options(self) -> dict:
        """The keyword options of ``summarize`` and ``StreamingSummary`` these settings choose.

        Example:
            >>> MeasureConfig(bins=10).summary_options()
            {'measures': ('sign', 'cos'), 'metric': 'cosine', 'bins': 10, 'min_count': 10}
        """
        return {"measures": self.measures, "metric": self.metric, "bins": self.bins, "min_count": self.min_count}

    def to_dict(self) -> dict:
        """JSON-ready settings (lists instead of tuples).

        Example:
            >>> MeasureConfig().to_dict()["measures"]
            ['sign', 'cos']
        """
        out = dataclasses.asdict(self)
        out["measures"] = list(self.measures)
        out["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return out
