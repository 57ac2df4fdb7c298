"""The paper's three architectures (Fort et al., arXiv 1901.09491), as Keras models.

All end in a softmax over the classes and are returned uncompiled; :func:`build_model` compiles
them the way the paper trains (Adam, sparse categorical cross-entropy).

Example:
    >>> model = paper_mlp((8, 8, 1), 10)
    >>> [layer.units for layer in model.layers[1:]]
    [500, 300, 100, 10]
"""

from __future__ import annotations

from typing import Sequence

from keras_stiffness.validation import check_int, is_int

ARCHITECTURES = ("mlp", "cnn", "resnet20")


def _check(input_shape: Sequence[int], n_classes: int) -> tuple:
    shape = tuple(input_shape)
    if not shape or not all(is_int(d) and d >= 1 for d in shape):
        raise ValueError(
            f"Received: input_shape={input_shape!r}; expected positive integer sizes without the "
            "batch axis, e.g. (28, 28, 1)."
        )
    check_int(n_classes, "n_classes", minimum=2)
    return tuple(int(d) for d in shape)


def paper_mlp(input_shape: Sequence[int], n_classes: int):
    """The paper's fully connected net: Flatten, Dense 500-300-100 (ReLU), Dense softmax.

    Args:
        input_shape: Shape of one example, e.g. ``(8, 8, 1)``.
        n_classes: Number of classes (size of the softmax).

    Returns:
        An uncompiled, built ``keras.Sequential`` named ``"paper_mlp"``.

    Raises:
        ValueError: A bad shape or class count.
    """
    import keras

    shape = _check(input_shape, n_classes)
    return keras.Sequential(
        [
            keras.Input(shape=shape),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(500, activation="relu", name="dense_500"),
            keras.layers.Dense(300, activation="relu", name="dense_300"),
            keras.layers.Dense(100, activation="relu", name="dense_100"),
            keras.layers.Dense(n_classes, activation="softmax", name="output"),
        ],
        name="paper_mlp",
    )


def paper_cnn(input_shape: Sequence[int], n_classes: int):
    """The paper's CNN: three 3×3 convolutions (16, 32, 32 channels, ReLU, padding ``"same"``), each
    followed by 2×2 max pooling (padding ``"same"``, so 8×8 digits still work), Flatten, Dense softmax.

    Args:
        input_shape: Shape of one image ``(H, W, C)``.
        n_classes: Number of classes.

    Returns:
        An uncompiled, built ``keras.Sequential`` named ``"paper_cnn"``.

    Raises:
        ValueError: A bad shape or class count, or an input that is not an image ``(H, W, C)``.
    """
    import keras

    shape = _check(input_shape, n_classes)
    if len(shape) != 3:
        raise ValueError(
            f"Received: input_shape={shape}; the CNN expects images (H, W, C), e.g. (28, 28, 1). "
            "Use --arch mlp for other inputs."
        )
    layers = [keras.Input(shape=shape)]
    for k, channels in enumerate((16, 32, 32), start=1):
        layers.append(keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"conv{k}"))
        layers.append(keras.layers.MaxPooling2D(2, padding="same", name=f"pool{k}"))
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(n_classes, activation="softmax", name="output"),
    ]
    return keras.Sequential(layers, name="paper_cnn")


def paper_resnet20(input_shape: Sequence[int], n_classes: int):
    """The paper's ResNet20 (v1, He et al. 2016 for CIFAR) without batch normalization.

    A 3×3 convolution (16 channels, ReLU), then 3 stages × 3 basic blocks with 16, 32 and 64 channels
    (each block: 3×3 conv, ReLU, 3×3 conv, plus the shortcut, ReLU). The first block of stages 2 and 3
    halves the resolution (stride 2) and its shortcut is a 1×1 projection; all other shortcuts are
    identities. Global average pooling and a Dense softmax end it: 19 convolutions + 1 dense = 20
    weighted layers. Convolutions use ``"same"`` padding and He-normal initialization, so any image
    size works (8×8 digits too).

    Args:
        input_shape: Shape of one image ``(H, W, C)``.
        n_classes: Number of classes.

    Returns:
        An uncompiled, built functional ``keras.Model`` named ``"paper_resnet20"``.

    Raises:
        ValueError: A bad shape or class count, or an input that is not an image ``(H, W, C)``.

    Example:
        >>> model = paper_resnet20((8, 8, 1), 10)
        >>> sum(type(layer).__name__ == "Conv2D" for layer in model.layers), model.output_shape
        (21, (None, 10))
    """
    import keras
    from keras import layers as L

    shape = _check(input_shape, n_classes)
    if len(shape) != 3:
        raise ValueError(
            f"Received: input_shape={shape}; ResNet20 expects images (H, W, C), e.g. (32, 32, 3). "
            "Use --arch mlp for other inputs."
        )

    def conv(filters, kernel, strides, name, activation=None):
        return L.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            activation=activation,
            kernel_initializer="he_normal",
            name=name,
        )

    inputs = keras.Input(shape=shape)
    h = conv(16, 3, 1, "conv0", "relu")(inputs)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            strides = 2 if stage > 1 and block == 1 else 1
            prefix = f"stage{stage}_block{block}"
            z = conv(filters, 3, strides, f"{prefix}_conv1", "relu")(h)
            z = conv(filters, 3, 1, f"{prefix}_conv2")(z)
            shortcut = h if strides == 1 else conv(filters, 1, strides, f"{prefix}_projection")(h)
            h = L.Activation("relu", name=f"{prefix}_relu")(L.Add(name=f"{prefix}_add")([z, shortcut]))
    h = L.GlobalAveragePooling2D(name="pool")(h)
    outputs = L.Dense(n_classes, activation="softmax", name="output")(h)
    return keras.Model(inputs, outputs, name="paper_resnet20")


_BUILDERS = {"mlp": paper_mlp, "cnn": paper_cnn, "resnet20": paper_resnet20}


def build_model(arch: str, input_shape: Sequence[int], n_classes: int, learning_rate: float):
    """Build and compile one of :data:`ARCHITECTURES` as the paper trains it.

    Args:
        arch: ``"mlp"``, ``"cnn"`` or ``"resnet20"``.
        input_shape: Shape of one example.
        n_classes: Number of classes.
        learning_rate: Adam's (constant) learning rate.

    Returns:
        A compiled Keras model (Adam, sparse categorical cross-entropy, accuracy).

    Raises:
        ValueError: Unknown ``arch`` or a non-positive learning rate.
    """
    import keras

    if arch not in ARCHITECTURES:
        raise ValueError(f"Received: arch={arch!r}; expected one of {list(ARCHITECTURES)}.")
    if not learning_rate > 0:
        raise ValueError(f"Received: learning_rate={learning_rate!r}; expected a positive number.")
    model = _BUILDERS[arch](input_shape, n_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
