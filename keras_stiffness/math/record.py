"""The record of one stiffness measurement: the contract between math, store, callback and CLI.

NumPy only. A :class:`Measurement` is what :func:`keras_stiffness.math.summarize.summarize` returns, what
:class:`keras_stiffness.store.writer.RunWriter` appends as one row, and what
:meth:`keras_stiffness.store.reader.Run.measurement` gives back.

Axis letters used in the shapes below (declared once, used everywhere):

- ``P``: pair sets, a subset of :data:`PAIR_SETS` in that order (``"train-train"`` always; the two
  with ``"val"`` only when the probe set has a held-out part).
- ``M``: measures, a subset of :data:`MEASURES` in that order.
- ``C``: classes. Class matrices are directed: ``[a, b]`` = step on an example of class ``a`` (from the
  first set of the pair set), effect on an example of class ``b`` (from the second set).
- ``L``: layers of the model that own trainable weights (the Gram blocks), in forward order.
- ``R``: representation spaces for distances: ``"input"`` then one per chosen layer.
- ``B``: distance bins.
- ``N``: probes (training part first, then the held-out part).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

PAIR_SETS = ("train-train", "train-val", "val-val")
MEASURES = ("sign", "cos")
TAGS = (
    "step",
    "epoch",
    "train_loss",
    "val_loss",
    "learning_rate",
    "wall_time",
    "probe_loss",
    "probe_val_loss",
)
#: Tags that say what a measurement cost. A group of their own, kept out of :data:`TAGS` (which
#: reports, logs and ``summarize(tags=...)`` iterate), each a float that is NaN when unknown: wall
#: seconds; the memory budget in bytes; the probes per Gram block, the blocks and block pairs of the
#: probe set; the pairs this worker formed, and the number of workers sharing them.
COST_TAGS = ("seconds", "memory_budget", "block_size", "blocks", "block_pairs", "worker_pairs", "workers")


@dataclasses.dataclass
class Measurement:
    """One measurement of stiffness on a fixed probe set.

    Attributes:
        step: Optimizer steps taken when measured (0 = at initialization).
        epoch: Epochs completed when measured (0.0 at initialization; fractional for step schedules).
        train_loss: Training loss as ``fit`` logs it: the epoch's running mean (at step 0, where fit has
            logged nothing yet, the training probes' mean loss).
        val_loss: Validation loss (NaN when unknown).
        learning_rate: Optimizer learning rate at that moment (NaN when unknown).
        wall_time: Seconds since the run started.
        pair_sets: Names of the ``P`` pair sets, in :data:`PAIR_SETS` order.
        measures: Names of the ``M`` measures, in :data:`MEASURES` order.
        class_matrix: ``(P, M, C, C)`` mean stiffness per directed class pair, i != j; NaN without pairs.
        class_pairs: ``(P, C, C)`` number of pairs behind each class-matrix entry.
        within: ``(P, M)`` mean of the class matrix diagonal (NaN entries ignored).
        between: ``(P, M)`` mean of the off-diagonal class-matrix entries (NaN entries ignored).
        mean: ``(P, M)`` mean stiffness over all pairs of the pair set.
        pairs: ``(P,)`` number of pairs in each pair set.
        layers: Names of the ``L`` layers with trainable weights.
        layer_mean: ``(L, P, M)`` like ``mean`` but from that layer's Gram block alone.
        layer_within: ``(L, P, M)`` like ``within`` from that layer's Gram block.
        layer_between: ``(L, P, M)`` like ``between`` from that layer's Gram block.
        spaces: Names of the ``R`` representation spaces (``"input"`` first).
        distance_edges: ``(R, B + 1)`` bin edges of the distance curves.
        curve_mean: ``(R, M, B)`` mean stiffness of train-train pairs per distance bin (NaN if empty).
        curve_count: ``(R, B)`` pairs per bin.
        critical_length: ``(R, M)`` first zero crossing of the binned curve (NaN when none).
        critical_length_fit: ``(R, M)`` zero of a line fitted to within-class stiffness vs distance
            (NaN when the slope is not negative or there are too few pairs).
        zero_grad: Number of probes whose gradient has zero norm (their stiffness is 0).
        gram: Optional ``(N, N)`` float64 Gram matrix of all probes, total over layers.
        probe_loss: Mean loss of the training probes at that moment, in inference mode: the current
            training loss, consistent across rows (use it to compare runs at matched train loss).
        probe_val_loss: Mean loss of the held-out probes at that moment (NaN without them).
        seconds: What the measurement cost in wall seconds, from its start to just before its row is
            written to a run file: computing the Gram matrix and the summaries, then the caller's
            own logging (the callback's Keras logs and TensorBoard). Writing the row is excluded.
            NaN when unknown (rows of run files older than format version 2). See
            :data:`COST_TAGS`.
        memory_budget: Bytes the measurement was allowed for its Gram blocks and summaries.
        block_size: Probes per Gram block.
        blocks: Blocks of probes; ``block_pairs``: block pairs ``I <= J`` of the whole Gram matrix.
        worker_pairs: Block pairs this process formed (all of them on one worker).
        workers: Processes that shared the measurement.
    """

    step: int
    epoch: float
    train_loss: float
    val_loss: float
    learning_rate: float
    wall_time: float
    pair_sets: tuple
    measures: tuple
    class_matrix: np.ndarray
    class_pairs: np.ndarray
    within: np.ndarray
    between: np.ndarray
    mean: np.ndarray
    pairs: np.ndarray
    layers: tuple
    layer_mean: np.ndarray
    layer_within: np.ndarray
    layer_between: np.ndarray
    spaces: tuple
    distance_edges: np.ndarray
    curve_mean: np.ndarray
    curve_count: np.ndarray
    critical_length: np.ndarray
    critical_length_fit: np.ndarray
    zero_grad: int = 0
    gram: Optional[np.ndarray] = None
    probe_loss: float = math.nan
    probe_val_loss: float = math.nan
    seconds: float = math.nan
    memory_budget: float = math.nan
    block_size: float = math.nan
    blocks: float = math.nan
    block_pairs: float = math.nan
    worker_pairs: float = math.nan
    workers: float = math.nan

    def scalar(self, name: str, pair_set: str = "train-train", measure: str = "cos") -> float:
        """One summary as a float: ``name`` in {"within", "between", "mean"}.

        Example:
            >>> from keras_stiffness.math.summarize import summarize
            >>> g = np.array([[1.0, 0.0], [0.9, 0.1], [-0.2, 1.0], [-0.3, 0.9]])
            >>> m = summarize(g @ g.T, None, np.array([0, 0, 1, 1]), np.array([False, True, False, True]), 2)
            >>> m.scalar("within", "train-val", "sign"), m.scalar("between", "train-val", "sign")
            (1.0, -1.0)
        """
        if name not in ("within", "between", "mean"):
            raise ValueError(f"Unknown summary: received name={name!r}; expected 'within', 'between' or 'mean'.")
        table = getattr(self, name)
        try:
            p = self.pair_sets.index(pair_set)
        except ValueError as exc:
            raise ValueError(
                f"Unknown pair set: received {pair_set!r}; this measurement has {list(self.pair_sets)}."
            ) from exc
        try:
            k = self.measures.index(measure)
        except ValueError as exc:
            raise ValueError(
                f"Unknown measure: received {measure!r}; this measurement has {list(self.measures)}."
            ) from exc
        return float(table[p, k])
