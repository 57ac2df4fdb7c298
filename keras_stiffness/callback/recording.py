"""Where a measurement goes besides the caller: Keras logs, TensorBoard, the run file's header.

Shared by the callback and ``kstiff analyze``.
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np

from keras_stiffness.math.record import Measurement

_PREFIX = {"train-train": "stiffness", "train-val": "stiffness_train_val", "val-val": "stiffness_val_val"}


def log_scalars(m: Measurement) -> Dict[str, float]:
    """Scalars for Keras ``logs``: ``stiffness_{within,between}_{measure}`` for train–train, and
    ``stiffness_train_val_*`` / ``stiffness_val_val_*`` when there are held-out probes. Without
    classes (class matrices with ``C = 0``, regression): ``stiffness_mean_{measure}`` instead (and
    ``stiffness_train_val_mean_*`` ...), the mean over all pairs.

    Example:
        >>> from keras_stiffness.math.summarize import summarize
        >>> g = np.array([[1.0, 0.0], [0.9, 0.1], [-0.2, 1.0], [-0.3, 0.9]])
        >>> m = summarize(g @ g.T, None, np.array([0, 0, 1, 1]), np.zeros(4, dtype=bool), 2)
        >>> sorted(log_scalars(m))
        ['stiffness_between_cos', 'stiffness_between_sign', 'stiffness_within_cos', 'stiffness_within_sign']
        >>> sorted(log_scalars(summarize(g @ g.T, None, np.full(4, -1), np.zeros(4, dtype=bool), 0)))
        ['stiffness_mean_cos', 'stiffness_mean_sign']
    """
    out: Dict[str, float] = {}
    names = ("within", "between") if m.class_matrix.shape[-1] else ("mean",)
    for p, pair_set in enumerate(m.pair_sets):
        for k, measure in enumerate(m.measures):
            for name in names:
                out[f"{_PREFIX[pair_set]}_{name}_{measure}"] = float(getattr(m, name)[p, k])
    return out


def make_run_info(
    names,
    probes,
    description: dict,
    *,
    rules: dict,
    config: dict,
    metric: str,
    min_count: int,
    save_gram: bool,
    bins: int,
    gram_dtype: str = "float64",
):
    """The run file's header (:class:`~keras_stiffness.store.layout.RunInfo`) for measurements named
    like ``names`` (a :class:`~keras_stiffness.measure.measuring.MeasureHeader` or a Measurement:
    anything with ``pair_sets``, ``measures``, ``layers`` and ``spaces``)."""
    from keras_stiffness.store.layout import RunInfo
    from keras_stiffness.version import library_versions

    summary = description.get("summary", "")
    config = dict(config)
    config.setdefault("model", {k: v for k, v in description.items() if k != "summary"})
    return RunInfo(
        class_names=list(probes.class_names),
        probe_labels=np.asarray(probes.y),
        probe_indices=np.asarray(probes.indices),
        probe_is_val=np.asarray(probes.is_val),
        probe_hash=probes.hash,
        pair_sets=tuple(names.pair_sets),
        measures=tuple(names.measures),
        layers=tuple(names.layers),
        spaces=tuple(names.spaces),
        bins=int(bins),
        metric=metric,
        min_count=int(min_count),
        save_gram=bool(save_gram),
        gram_dtype=gram_dtype,
        config=config,
        model_summary=summary,
        loss=str(description.get("loss", "")),
        rules=dict(rules),
        versions=library_versions(),
    )


def _diverging_image(matrix: np.ndarray) -> np.ndarray:
    """``(C, C)`` values in [−1, 1] → ``(1, C·s, C·s, 3)`` float image, blue–white–red, NaN grey."""
    v = np.clip(np.nan_to_num(matrix, nan=0.0), -1.0, 1.0)
    red = np.where(v > 0, 1.0, 1.0 + v)
    blue = np.where(v < 0, 1.0, 1.0 - v)
    green = 1.0 - np.abs(v)
    img = np.stack([red, green, blue], axis=-1)
    img[np.isnan(matrix)] = 0.6
    scale = max(1, 128 // max(1, matrix.shape[0]))
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    return img[None].astype(np.float32)


def write_tensorboard(writer, m: Measurement, sampled_cos: np.ndarray) -> None:
    """Within/between scalars, the train–train class matrices as images, and a histogram of pairwise
    cosine stiffness (``MeasureInfo.sampled_cos``: every train–train pair, evenly thinned past 2**20),
    at step ``m.step``."""
    import tensorflow as tf

    with writer.as_default(step=int(m.step)):
        for name, value in log_scalars(m).items():
            if not math.isnan(value):
                tf.summary.scalar(name, value)
        for k, measure in enumerate(m.measures if m.class_matrix.shape[-1] else ()):
            tf.summary.image(f"stiffness_class_matrix_{measure}", _diverging_image(m.class_matrix[0, k]))
        tf.summary.histogram("stiffness_pairwise_cos", np.asarray(sampled_cos))
    writer.flush()
