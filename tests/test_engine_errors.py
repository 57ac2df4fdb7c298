"""Bad inputs to ``gradient_gram`` raise ValueError/TypeError saying what was received and expected."""

import keras
import numpy as np
import pytest
from keras import layers as L

from keras_stiffness import gradient_gram

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), L.Dense(5, activation="relu"), L.Dense(3)])


@pytest.fixture(scope="module")
def probes():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 4)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2])


def test_mismatched_lengths(model, probes):
    x, y = probes
    with pytest.raises(ValueError, match=r"Received x with 6 examples and y with 5"):
        gradient_gram(model, x, y[:5], loss=LOSS)


def test_label_out_of_range(model, probes):
    x, y = probes
    y = y.copy()
    y[4] = 3
    with pytest.raises(ValueError, match=r"Received: labels with 1 label\(s\) outside \[0, 3\) \(first labels\[4\]=3"):
        gradient_gram(model, x, y, loss=LOSS)
    with pytest.raises(ValueError, match=r"outside \[0, 3\) \(first labels\[0\]=-1"):
        gradient_gram(model, x, np.r_[-1, y[1:]], loss=LOSS)


def test_non_integer_labels(model, probes):
    x, y = probes
    with pytest.raises(ValueError, match=r"non-integer class labels .* expected integer labels in \[0, 3\)"):
        gradient_gram(model, x, y + 0.5, loss=LOSS)


def test_labels_shaped_unlike_the_output(probes):
    x, _ = probes
    regression = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(ValueError, match=r"Received labels of shape \(6, 3\); expected shape \(N, 2\)"):
        gradient_gram(regression, x, np.zeros((6, 3), np.float32), loss="mse")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(model, probes, bad):
    x, y = probes
    x = x.copy()
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN/Inf value\(s\) \(first in example 2\)"):
        gradient_gram(model, x, y, loss=LOSS)


def test_unbuilt_model(probes):
    x, y = probes
    unbuilt = keras.Sequential([L.Dense(3)])
    with pytest.raises(ValueError, match=r"unbuilt model .*Fix: call model.build"):
        gradient_gram(unbuilt, x, y, loss=LOSS)


def test_no_loss_compiled_and_none_given(model, probes):
    x, y = probes
    with pytest.raises(ValueError, match=r"no compiled loss and loss=None"):
        gradient_gram(model, x, y)


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_probes(model, probes, n):
    x, y = probes
    with pytest.raises(ValueError, match=rf"Received N={n} probe\(s\).*at least 2"):
        gradient_gram(model, x[:n], y[:n], loss=LOSS)


def test_unknown_method(model, probes):
    x, y = probes
    with pytest.raises(
        ValueError, match=r"Received method='fast'; expected one of \['auto', 'structured', 'jacobian'\]"
    ):
        gradient_gram(model, x, y, loss=LOSS, method="fast")


@pytest.mark.parametrize("thing", [lambda x: x, "model", None])
def test_not_a_keras_model(probes, thing):
    x, y = probes
    with pytest.raises(TypeError, match=r"Received model of type \w+; expected a Keras model"):
        gradient_gram(thing, x, y, loss=LOSS)


def test_one_loss_per_output(model, probes):
    x, y = probes
    with pytest.raises(TypeError, match=r"Received loss of type list"):
        gradient_gram(model, x, y, loss=[LOSS])


def test_unknown_loss_name(model, probes):
    x, y = probes
    with pytest.raises(ValueError, match=r"Received loss='crossentropyy', which Keras does not know"):
        gradient_gram(model, x, y, loss="crossentropyy")


def test_loss_that_reduces_over_the_batch(model, probes):
    x, y = probes
    mean_loss = lambda y_true, y_pred: keras.ops.mean(LOSS.call(y_true, y_pred))  # noqa: E731
    with pytest.raises(ValueError, match=r"returned a single scalar; expected one value per example"):
        gradient_gram(model, x, y, loss=mean_loss)


def test_unknown_precision(model, probes):
    x, y = probes
    with pytest.raises(ValueError, match=r"Received: precision='float16'; expected one of 'float32', 'float64'"):
        gradient_gram(model, x, y, loss=LOSS, precision="float16")
