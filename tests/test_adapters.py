"""The adapter protocol: FunctionAdapter on a plain-TensorFlow model (no Keras), checked against a
naive per-example gradient loop; KerasAdapter's representations; bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_stiffness import FunctionAdapter, KerasAdapter
from keras_stiffness.measure.adapters import StiffnessAdapter


def plain_tf_model(seed=0):
    """A two-layer net as raw tf.Variables and a per-example loss (not a Keras model)."""
    rng = np.random.default_rng(seed)
    w1 = tf.Variable(rng.normal(size=(5, 7)).astype("float32"), name="w1")
    b1 = tf.Variable(np.zeros(7, "float32"), name="b1")
    w2 = tf.Variable(rng.normal(size=(7, 3)).astype("float32"), name="w2")

    def per_example_loss(x, y):
        h = tf.tanh(tf.matmul(tf.cast(x, tf.float32), w1) + b1)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int64), tf.matmul(h, w2))

    return per_example_loss, [w1, b1, w2]


def naive_gram(loss_fn, variables, x, y):
    rows = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(x[i : i + 1], y[i : i + 1]))
        grads = tape.gradient(loss, variables)
        rows.append(np.concatenate([np.asarray(g, np.float64).ravel() for g in grads]))
    g = np.stack(rows)
    return g @ g.T


def test_function_adapter_matches_a_per_example_loop_on_plain_tf_variables():
    loss_fn, variables = plain_tf_model()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 5)), np.arange(9) % 3
    adapter = FunctionAdapter(loss_fn, variables, groups={"hidden": variables[:2], "out": variables[2:]})
    assert isinstance(adapter, StiffnessAdapter)
    result = adapter.gram(x, y)
    ref = naive_gram(loss_fn, variables, x, y)
    assert np.linalg.norm(result.total - ref) / np.linalg.norm(ref) < 1e-5
    assert list(result.per_layer) == adapter.layer_names() == ["hidden", "out"]
    np.testing.assert_allclose(sum(result.per_layer.values()), result.total, rtol=1e-12)
    np.testing.assert_allclose(result.losses, loss_fn(x, y).numpy(), rtol=1e-5)
    assert list(adapter.representations(x)) == ["input"]


def test_function_adapter_default_groups_are_one_per_variable():
    loss_fn, variables = plain_tf_model()
    adapter = FunctionAdapter(loss_fn, variables)
    assert len(adapter.layer_names()) == 3


def test_function_adapter_bad_input():
    loss_fn, variables = plain_tf_model()
    with pytest.raises(TypeError, match="callable"):
        FunctionAdapter("not a function", variables)
    with pytest.raises(ValueError, match="empty list of variables"):
        FunctionAdapter(loss_fn, [])
    with pytest.raises(ValueError, match="exactly once"):
        FunctionAdapter(loss_fn, variables, groups={"a": variables[:2]})
    reduced = FunctionAdapter(lambda x, y: tf.reduce_mean(loss_fn(x, y))[None], variables)
    with pytest.raises(ValueError, match="one loss per example"):
        reduced.gram(np.zeros((4, 5)), np.zeros(4, int))


def test_keras_adapter_representations_are_flat_and_in_forward_order():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4, 2)), keras.layers.Flatten(), keras.layers.Dense(6, name="a"), keras.layers.Dense(3, name="b")]
    )
    model.compile(loss="sparse_categorical_crossentropy")
    reps = KerasAdapter(model).representations(np.ones((5, 4, 2), "float32"))
    assert list(reps) == ["input", "a", "b"]
    assert [r.shape for r in reps.values()] == [(5, 8), (5, 6), (5, 3)]
    with pytest.raises(ValueError, match="not among"):
        KerasAdapter(model).representations(np.ones((5, 4, 2), "float32"), ["missing"])
