"""Small Keras models on 8x8x1 digits for the CLI tests, saved in several ways.

Importable as ``tests.helpers_models`` so that ``kstiff analyze --custom-objects
tests.helpers_models:DigitsSubclassed`` can find the subclassed model.
"""

from __future__ import annotations

import keras
import numpy as np

INPUT_SHAPE = (8, 8, 1)
N_CLASSES = 10


@keras.saving.register_keras_serializable(package="kstiff_tests")
class DigitsSubclassed(keras.Model):
    """A subclassed model: Flatten, Dense 16 ReLU, Dense softmax."""

    def __init__(self, hidden: int = 16, n_classes: int = N_CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.n_classes = n_classes
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(hidden, activation="relu", name="hidden")
        self.out = keras.layers.Dense(n_classes, activation="softmax", name="probs")

    def call(self, x):
        return self.out(self.dense(self.flatten(x)))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "n_classes": self.n_classes}


class UnregisteredScale(keras.layers.Layer):
    """A custom layer deliberately NOT registered with Keras (for the 'unregistered' error)."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def _compile(model):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def sequential(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return _compile(
        keras.Sequential(
            [
                keras.Input(INPUT_SHAPE),
                keras.layers.Flatten(),
                keras.layers.Dense(16, activation="relu", name="hidden"),
                keras.layers.Dense(N_CLASSES, activation="softmax", name="probs"),
            ],
            name="seq",
        )
    )


def functional(seed: int = 0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax", name="probs")(x)
    return _compile(keras.Model(inputs, outputs, name="func"))


def subclassed(seed: int = 0):
    keras.utils.set_random_seed(seed)
    model = DigitsSubclassed(name="sub")
    model(np.zeros((1, *INPUT_SHAPE), "float32"))
    return _compile(model)


def with_lambda(seed: int = 0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: 2.0 * t, name="double")(x)
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax")(x)
    return _compile(keras.Model(inputs, outputs, name="lam"))


def with_unregistered_layer(seed: int = 0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Flatten()(inputs)
    x = UnregisteredScale(name="scale")(x)
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax")(x)
    return _compile(keras.Model(inputs, outputs, name="custom"))


def wrong_input(seed: int = 0):
    """A model for 28x28x1 images: does not fit digits."""
    keras.utils.set_random_seed(seed)
    return _compile(
        keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(N_CLASSES, activation="softmax"),
            ],
            name="mnist_shaped",
        )
    )


def uncompiled(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(N_CLASSES, activation="softmax"),
        ],
        name="uncompiled",
    )
