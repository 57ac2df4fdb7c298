"""Reading a ``tf.data.Dataset`` of ``(x, y)`` into NumPy arrays, for
:meth:`keras_stiffness.data.probes.ProbeSet.from_dataset`.

TensorFlow is imported inside :func:`_read_dataset` only, so importing this module stays light.
"""

from __future__ import annotations

import warnings

import numpy as np

_BATCH = 1024  # batch size used to read unbatched tf.data datasets


def read_dataset(dataset, name: str, max_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Read up to ``max_examples`` ``(x, y)`` examples of a tf.data dataset into NumPy arrays."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"Received: {name} of type {type(dataset).__name__}; expected a tf.data.Dataset of "
            "(x, y) tuples. For arrays use ProbeSet(x, y, ...)."
        )
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) in (2, 3)) or not all(isinstance(s, tf.TensorSpec) for s in spec[:2]):
        raise TypeError(
            f"Received: {name} with elements {spec}; expected (x, y) or (x, y, sample_weight) "
            "tuples of tensors. Map it first, e.g. ds.map(lambda d: (d['image'], d['label']))."
        )
    x_shape, y_shape = spec[0].shape, spec[1].shape
    if y_shape.rank is None or x_shape.rank is None:
        raise ValueError(
            f"Received: {name} with x shape {x_shape} and y shape {y_shape}; expected known ranks "
            "to tell batched from unbatched data. Set shapes (e.g. with ensure_shape) first."
        )
    batched = y_shape.rank == 2 or (
        y_shape.rank == 1 and x_shape.rank >= 1 and (y_shape[0] is None or x_shape[0] == y_shape[0])
    )
    if y_shape.rank > 2:
        raise ValueError(
            f"Received: {name} with labels of shape {y_shape}; expected integer labels (scalar per "
            "example) or one-hot vectors. Map the labels first."
        )
    if not batched:
        dataset = dataset.batch(_BATCH)
    xs, ys, total, truncated = [], [], 0, False
    for element in dataset.as_numpy_iterator():
        xb, yb = element[0], element[1]
        if total >= max_examples:
            truncated = True
            break
        take = min(len(xb), max_examples - total)
        truncated = take < len(xb)
        xs.append(xb[:take])
        ys.append(yb[:take])
        total += take
    if truncated:
        warnings.warn(
            f"ProbeSet.from_dataset: read only the first {max_examples} examples of {name}; the "
            "probes are drawn from those. Pass a larger max_examples to read more.",
            UserWarning,
            stacklevel=3,
        )
    if not xs:
        raise ValueError(f"Received: an empty {name}; expected at least one (x, y) example. Check the pipeline.")
    return np.concatenate(xs), np.concatenate(ys)
