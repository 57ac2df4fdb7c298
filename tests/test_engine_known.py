"""Known answers for ``gradient_gram``: what the paper reports at initialization, the first-order
meaning of ``G_12`` (a finite-difference step), and what the engine must never change.

Stiffness means are computed here directly from ``G`` (no other module of the package is used).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from engine_cases import case_named
from keras import layers as L
from reference import reference_gram, relative_error

from keras_stiffness import gradient_gram

METHODS = ["structured", "auto", "jacobian"]


def digits_probes(per_class, seed=0):
    """Standardized scikit-learn digits (bundled, no download), ``per_class`` probes of each class."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(data.target == c), per_class, replace=False) for c in range(10)])
    return x[idx], data.target[idx].astype(np.int64)


def paper_mlp(dtype="float32", widths=(500, 300, 100)):
    """The paper's fully connected ReLU net (on 64 digit pixels), logits out."""
    keras.utils.set_random_seed(0)
    hidden = [L.Dense(w, activation="relu", dtype=dtype) for w in widths]
    return keras.Sequential([keras.Input((64,), dtype=dtype), *hidden, L.Dense(10, dtype=dtype)])


def logits_loss(dtype="float32"):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)


@pytest.fixture(scope="module")
def digits_gram():
    x, y = digits_probes(per_class=30)
    return gradient_gram(paper_mlp(), x.astype(np.float32), y, loss=logits_loss()).total, y


def test_sign_stiffness_at_init_is_positive_within_and_negative_between_classes(digits_gram):
    g, y = digits_gram
    same = y[:, None] == y[None, :]
    pairs = ~np.eye(len(y), dtype=bool)
    sign = np.sign(g)
    cos = g / np.sqrt(np.outer(np.diag(g), np.diag(g)))
    assert sign[same & pairs].mean() > 0.99
    assert sign[~same].mean() < -0.3
    assert cos[same & pairs].mean() > 0.2
    assert cos[~same].mean() < 0.0


def test_gram_is_symmetric_with_positive_diagonal(digits_gram):
    g, _ = digits_gram
    np.testing.assert_allclose(g, g.T, rtol=1e-12, atol=1e-12 * np.abs(g).max())
    assert (np.diag(g) > 0).all()  # S(X, X) = 1
    cos = g / np.sqrt(np.outer(np.diag(g), np.diag(g)))
    np.testing.assert_allclose(np.diag(cos), 1.0, rtol=1e-12)
    assert np.abs(cos).max() <= 1 + 1e-9


def loss_of_one(model, loss, x, y):
    return float(loss(y[None], model(x[None], training=False)))


def test_g12_is_the_first_order_change_of_loss_2_after_a_step_on_example_1():
    """``L(W − ε g_1; x_2) − L(W; x_2) = −ε G_12 + O(ε²)`` (float64 model)."""
    model = paper_mlp("float64", widths=(32, 16))
    loss = logits_loss("float64")
    x, y = digits_probes(per_class=1)
    x = x.astype(np.float32).astype(np.float64)  # float32-representable (see test_float64_model_...)
    g = gradient_gram(model, x, y, loss=loss).total
    with tf.GradientTape() as tape:
        l1 = loss(y[:1], model(x[:1], training=False))
    g1 = tape.gradient(l1, model.trainable_variables)
    saved = [v.numpy() for v in model.trainable_variables]
    eps = 1e-5
    try:
        for v, d in zip(model.trainable_variables, g1):
            v.assign(v - eps * d)
        moved = [loss_of_one(model, loss, x[j], y[j]) for j in range(len(y))]
    finally:
        for v, w in zip(model.trainable_variables, saved):
            v.assign(w)
    before = [loss_of_one(model, loss, x[j], y[j]) for j in range(len(y))]
    change = (np.array(moved) - np.array(before)) / eps
    for j in range(len(y)):  # j = 0 is the self pair, then nine other classes
        assert change[j] == pytest.approx(-g[0, j], rel=1e-2, abs=1e-5 * abs(g[0, 0]))
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(model.trainable_variables, saved))


def test_float64_model_is_exact_in_float64():
    """A float64 model's Gram matches a float64 reference to float64 precision (inputs not rounded)."""
    model = paper_mlp("float64", widths=(16,))
    loss = logits_loss("float64")
    x, y = digits_probes(per_class=1)
    ref = reference_gram(model, x, y, loss)
    for method in METHODS:
        result = gradient_gram(model, x, y, loss=loss, method=method)
        assert relative_error(result.total, ref.total) < 1e-12, method


def snapshot(model):
    return [np.array(v.numpy()) for v in model.weights]


@pytest.mark.parametrize("name", ["batchnorm_conv", "separable2d", "recurrent", "dropout"])
def test_model_is_left_untouched(name):
    """Weights and BatchNormalization moving statistics are unchanged; no wrapper is left behind."""
    case = case_named(name)
    model, x, y = case.make()
    before = snapshot(model)
    activations = {id(layer): getattr(layer, "activation", None) for layer in model.layers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in METHODS:
            gradient_gram(model, x, y, loss=case.loss, method=method)
    after = snapshot(model)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        assert np.array_equal(b, a)
    for layer in model._flatten_layers():
        assert "call" not in vars(layer), layer.name
    assert {id(layer): getattr(layer, "activation", None) for layer in model.layers} == activations


def test_training_only_layers_are_off():
    """Dropout(0.5): repeated calls agree exactly, and match the model with dropout removed."""
    case = case_named("dropout")
    model, x, y = case.make()
    first = gradient_gram(model, x, y, loss=case.loss, method="structured").total
    again = gradient_gram(model, x, y, loss=case.loss, method="structured").total
    jac = gradient_gram(model, x, y, loss=case.loss, method="jacobian").total
    np.testing.assert_array_equal(first, again)
    assert relative_error(jac, first) < 1e-5
    plain = keras.Sequential([keras.Input((8,)), model.get_layer("d1"), model.get_layer("head")])
    assert relative_error(gradient_gram(plain, x, y, loss=case.loss).total, first) < 1e-6


def test_the_logit_gradient_forces_minus_one_in_the_output_layer_block():
    """Where a layer's input kernel is positive for all pairs (the output layer sees post-ReLU
    activations, a_i·a_j > 0), its block is (a_i·a_j)(δ_i·δ_j) with δ = p − e_y: at initialization
    (p ≈ uniform) δ_i·δ_j < 0 for every pair of different classes and > 0 within a class, so that
    block's sign stiffness is exactly −1 between and +1 within; the total stays clearly negative
    between classes (the hidden layers' blocks soften it)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(data.target == c), 20, replace=False) for c in range(10)])
    x, y = (data.data[idx] / 16.0).astype(np.float32), data.target[idx].astype(np.int64)
    result = gradient_gram(paper_mlp(), x, y, loss=logits_loss())
    same = y[:, None] == y[None, :]
    pairs = ~np.eye(len(y), dtype=bool)
    out = np.sign(result.per_layer[list(result.per_layer)[-1]])
    assert np.all(out[~same] == -1.0) and np.all(out[same] == 1.0)
    total = np.sign(result.total)
    assert total[same & pairs].mean() == pytest.approx(1.0, abs=0.01)
    assert total[~same].mean() < -0.3
