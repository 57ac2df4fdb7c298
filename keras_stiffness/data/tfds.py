"""Read a prepared TensorFlow Datasets image classification set as NumPy arrays, never downloading.

The ``tfds:NAME[:SPLIT]`` source of :func:`keras_stiffness.data.sources.load_data`, and the reader behind its
presets (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``); ``load_data`` imports this module
only when such a source is asked for. TensorFlow Datasets itself is imported inside the functions, so
importing this module stays light too. Missing data raises
:class:`DataNotFoundError` saying how to get it.
"""

from __future__ import annotations

import difflib
import math
import os
import re

import numpy as np

from keras_stiffness.validation import check_labels


class DataNotFoundError(FileNotFoundError):
    """A TFDS dataset is not prepared in the data directory, and this toolkit never downloads."""


def load_tfds(name, split, data_dir, val_fraction, max_train, *, source=None):
    """Read split ``split`` of TFDS set ``name`` (and its ``test`` split as held-out data, if any).

    Args:
        name: TFDS builder name, optionally ``NAME/CONFIG``.
        split: Training split, possibly with TFDS slicing (``"train[:10%]"``).
        data_dir: TFDS data directory, or None for ``$TFDS_DATA_DIR``, else the TFDS default.
        val_fraction: Fraction the caller will carve when there is no ``test`` split.
        max_train: Cap on the training examples read, or None.
        source: The source as the user wrote it, for the "not prepared" message (default
            ``"tfds:NAME"``; a preset passes its own name).

    Returns:
        ``(x, y, x_val, y_val, class_names)``; ``x_val``/``y_val`` are None without a ``test`` split.

    Raises:
        ValueError: Unknown builder, unknown split, not image classification, or an empty split.
        DataNotFoundError: The dataset is not prepared in the data directory.
    """
    import tensorflow_datasets as tfds

    base = name.split("/")[0]
    known = tfds.list_builders(with_community_datasets=False)
    if base not in known:
        close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(
            f"Received: source='tfds:{name}', but {base!r} is not a TensorFlow Datasets builder; "
            f"expected a registered image classification set such as mnist, fashion_mnist, cifar10 "
            f"or cifar100.{hint} See tfds.list_builders()."
        )
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    builder = tfds.builder(name, data_dir=data_dir)
    image_key, label_key = _image_label_keys(builder, name)
    class_names = [str(s) for s in builder.info.features[label_key].names]
    splits = set(builder.info.splits.keys())  # empty when unknown (not prepared, or mocked)
    split_base = re.split(r"[\[+|]", split)[0]
    if splits and split_base not in splits:
        raise ValueError(
            f"Received: split {split!r} for 'tfds:{name}'; expected one of {sorted(splits)}. "
            f"Write e.g. 'tfds:{name}:train'."
        )
    has_test = split_base != "test" and (not splits or "test" in splits)
    limit = max_train
    if max_train is not None and not has_test and val_fraction > 0:
        limit = math.ceil(max_train / (1.0 - val_fraction))
    source = source or f"tfds:{name}"
    x, y = _read_tfds_split(builder, name, split, image_key, label_key, limit, source)
    x_val = y_val = None
    if has_test:
        x_val, y_val = _read_tfds_split(builder, name, "test", image_key, label_key, None, source)
    return x, y, x_val, y_val, class_names


def _image_label_keys(builder, name):
    import tensorflow_datasets as tfds

    features = builder.info.features
    kinds = {k: type(f).__name__ for k, f in features.items()}
    keys = builder.info.supervised_keys
    if (
        isinstance(keys, tuple)
        and len(keys) == 2
        and all(isinstance(k, str) and k in features for k in keys)
        and isinstance(features[keys[0]], tfds.features.Image)
        and isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        image_key, label_key = keys
    else:
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
        image_key = "image" if "image" in images else (images[0] if len(images) == 1 else None)
        label_key = "label" if "label" in labels else (labels[0] if len(labels) == 1 else None)
        if image_key is None or label_key is None:
            raise ValueError(
                f"Received: source='tfds:{name}' with features {kinds}; expected an image "
                "classification set with one Image and one ClassLabel feature. Export other data "
                "to an .npz (x, y) instead."
            )
    shape = features[image_key].shape
    if any(d is None for d in shape):
        raise ValueError(
            f"Received: source='tfds:{name}' whose images have variable shape {shape}; expected a "
            "fixed image shape. Resize the images and export them to an .npz (x, y) instead."
        )
    return image_key, label_key


def _read_tfds_split(builder, name, split, image_key, label_key, limit, source):
    import tensorflow_datasets as tfds

    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError as err:  # TFDS signals "not prepared" with an AssertionError
        if builder.is_prepared():
            raise
        raise DataNotFoundError(_not_found_message(name, builder, source)) from err
    if limit is not None:
        ds = ds.take(limit)
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key])).batch(4096)
    xs, ys = [], []
    for xb, yb in tfds.as_numpy(ds):
        xs.append(xb)
        ys.append(yb)
    if not xs:
        raise ValueError(
            f"Received: split {split!r} of 'tfds:{name}' with no examples; expected a non-empty "
            "split. Choose another split."
        )
    x = np.concatenate(xs)
    return x, check_labels(np.concatenate(ys), "label")


def _not_found_message(name, builder, source):
    searched = os.fspath(builder.data_dir)
    return (
        f"Received: source={source!r}, but the TFDS dataset {name!r} is not prepared: looked in "
        f"{searched!r} (data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets); expected its "
        "prepared files there, and this toolkit never downloads. How to fix: on a machine with "
        f'network run `tfds build {name}` (or `python -c "import tensorflow_datasets as tfds; '
        f"tfds.load('{name}')\"`), copy the resulting data directory (default "
        "~/tensorflow_datasets) here, then pass --data-dir DIR (data_dir=DIR) or set "
        "TFDS_DATA_DIR=DIR."
    )
