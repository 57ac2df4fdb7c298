"""The SimpleRNN/LSTM/GRU rule: its forward reproduces the layer, its Gram blocks are exact.

The end-to-end exactness of every recurrent architecture is in ``test_engine_exactness`` (cases in
``engine_cases``); here: the capture-pass recurrence against ``layer(x)`` over the configurations,
frozen weights, masked steps, the fallback for what the rule does not reproduce, and both product
routes.
"""

import functools
import itertools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as L
from reference import reference_gram, relative_error

from keras_stiffness import gradient_gram
from keras_stiffness.engine.capture import capture
from keras_stiffness.engine.losses import resolve_loss
from keras_stiffness.engine.registry import find_rule
from keras_stiffness.engine.rules import base, recurrent
from keras_stiffness.engine.rules.recurrence import run_recurrence
from keras_stiffness.engine.units import model_units

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
N, T, D, U = 5, 4, 3, 4

#: Layer kinds: (name, constructor) with the cell settings that change the recurrence.
KINDS = {
    "simple_tanh": functools.partial(L.SimpleRNN, U),
    "simple_linear": functools.partial(L.SimpleRNN, U, activation=None),
    "lstm": functools.partial(L.LSTM, U),
    "lstm_hard": functools.partial(L.LSTM, U, activation="relu", recurrent_activation="hard_sigmoid"),
    "gru_after": functools.partial(L.GRU, U, reset_after=True),
    "gru_before": functools.partial(L.GRU, U, reset_after=False),
}
#: Every combination of these call-level settings is checked for every kind.
FLAGS = ("return_sequences", "go_backwards", "masked", "initial_state")


def _mask():
    mask = np.ones((N, T), bool)
    mask[1, 2:] = False  # trailing padding
    mask[2, :2] = False  # leading padding: output zeros, state = initial state
    mask[3, 1] = False  # a gap
    mask[4] = False  # nothing at all
    return tf.constant(mask)


def _layer(kind, index, dtype="float32", **flags):
    """A built layer of ``kind`` with random weights; ``index`` rotates the settings that only
    change details (bias, returned states, zeros at masked outputs, unroll, dropout)."""
    layer = KINDS[kind](
        return_sequences=flags["return_sequences"],
        go_backwards=flags["go_backwards"],
        use_bias=index % 2 == 0,
        return_state=index % 3 == 0,
        zero_output_for_mask=index % 4 == 1,
        unroll=index % 5 == 2,
        dropout=0.3 if index % 3 == 1 else 0.0,
        recurrent_dropout=0.3 if index % 4 == 2 else 0.0,
        dtype=dtype,
    )
    layer.build((None, T, D))
    rng = np.random.default_rng(index)
    for w in layer.weights:
        w.assign(rng.normal(0.0, 0.6, w.shape))
    return layer


@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_reproduces_the_layer(kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, D)).astype(np.float32)
    for index, values in enumerate(itertools.product([False, True], repeat=len(FLAGS))):
        flags = dict(zip(FLAGS, values))
        layer = _layer(kind, index, **flags)
        mask = _mask() if flags["masked"] else None
        states = None
        if flags["initial_state"]:
            count = 2 if isinstance(layer, L.LSTM) else 1
            states = [tf.constant(rng.standard_normal((N, U)).astype(np.float32)) for _ in range(count)]
        expected = tf.nest.flatten(layer(x, initial_state=states, mask=mask, training=False))
        got = tf.nest.flatten(run_recurrence(layer, x, states, mask))
        assert len(got) == len(expected), (kind, flags)
        for e, g in zip(expected, got):
            assert g.shape == e.shape and g.dtype == e.dtype, (kind, flags)
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=f"{kind} {flags} #{index}")


@pytest.mark.parametrize("kind", ["lstm", "gru_before"])
def test_forward_reproduces_a_float64_layer(kind):
    x = np.random.default_rng(1).standard_normal((N, T, D))
    layer = _layer(kind, 3, dtype="float64", return_sequences=True, go_backwards=True)
    for e, g in zip(tf.nest.flatten(layer(x)), tf.nest.flatten(run_recurrence(layer, x))):
        assert g.dtype == tf.float64
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-13)


def _problem(build, n=7):
    keras.utils.set_random_seed(5)
    model = build()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, *model.input_shape[1:])).astype(np.float32)
    return model, x, np.arange(n) % 3


def _check_blocks(model, x, y, result):
    ref = reference_gram(model, x, y, LOGITS)
    assert relative_error(result.total, ref.total) < 1e-5
    scale = np.linalg.norm(ref.total)
    for name, block in result.per_layer.items():
        assert np.linalg.norm(block - ref.block(name)) / scale < 1e-5, name


@pytest.mark.parametrize(
    "make, frozen",
    [
        (lambda: L.LSTM(4, return_sequences=True, name="rec"), "recurrent_kernel"),
        (lambda: L.GRU(4, return_sequences=True, name="rec"), "bias"),
        (lambda: L.GRU(4, return_sequences=True, reset_after=False, name="rec"), "kernel"),
    ],
)
def test_frozen_weight_leaves_exact_blocks_for_the_rest(make, frozen):
    model, x, y = _problem(lambda: keras.Sequential([keras.Input((5, 3)), make(), L.Flatten(), L.Dense(3)]))
    layer = model.get_layer("rec")
    getattr(layer.cell, frozen).trainable = False
    result = gradient_gram(model, x, y, loss=LOGITS, method="structured")
    assert result.rules["rec"] == "recurrent"
    _check_blocks(model, x, y, result)
    per_example_loss, _ = resolve_loss(model, LOGITS)
    unit = next(u for u in model_units(model) if u.name == "rec")
    captured = capture(model, [unit], x, y, per_example_loss, chunk_size=7)[0]["rec"]
    blocks = recurrent.recurrent_gram(layer, captured)
    assert getattr(layer.cell, frozen).name not in blocks  # a frozen weight's block is not computed
    assert set(blocks) == {v.name for v in layer.trainable_variables}


def test_masked_steps_get_no_gradient():
    """The masked recurrence discards a masked step's new state, so the gradient at its projection is 0."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((4,), dtype="int32"), L.Embedding(6, 3, mask_zero=True), L.GRU(3, name="gru"), L.Dense(3)]
    )
    ids = np.array([[1, 2, 0, 0], [0, 3, 4, 5], [2, 0, 1, 3]], np.int32)
    per_example_loss, _ = resolve_loss(model, LOGITS)
    unit = next(u for u in model_units(model) if u.name == "gru")
    captured = capture(model, [unit], ids, np.array([0, 1, 2]), per_example_loss, chunk_size=3)[0]["gru"]
    dx = captured.calls[0].grads["x"]
    assert np.all(dx[ids == 0] == 0) and np.all(np.abs(dx[ids != 0]).sum(axis=-1) > 0)


def test_stateful_lstm_goes_to_the_fallback_with_a_warning():
    # The batch size of a stateful layer is fixed; the engine's shape check calls the model on two
    # probes, so two probes it is.
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input(batch_shape=(2, 4, 2)), L.LSTM(3, stateful=True, name="lstm"), L.Dense(3)])
    x = np.random.default_rng(3).standard_normal((2, 4, 2)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gradient_gram(model, x, np.array([0, 2]), loss=LOGITS, method="structured")
    messages = [str(w.message) for w in caught if "'lstm' (LSTM)" in str(w.message)]
    assert len(messages) == 1 and "stateful" in messages[0], messages
    assert result.rules["lstm"] == "fallback:jacobian"


def test_custom_cells_and_overridden_recurrences_are_not_claimed():
    class MyCell(L.LSTMCell):
        """A cell subclass: its step may differ from LSTMCell's."""

    class MyLSTM(L.LSTM):
        def call(self, sequences, initial_state=None, mask=None, training=False):
            return super().call(sequences * 2.0, initial_state=initial_state, mask=mask, training=training)

    custom_cell = L.LSTM(3)
    custom_cell.cell.__class__ = MyCell
    rule, reason = find_rule(custom_cell)
    assert rule is None and "custom cell MyCell" in reason
    rule, reason = find_rule(MyLSTM(3))
    assert rule is None and "overrides LSTM.call" in reason
    rule, reason = find_rule(L.RNN(L.LSTMCell(3)))
    assert rule is None and "no Gram rule" in reason
    for layer in (L.LSTM(3, unroll=True), L.GRU(3, use_cudnn=False), L.SimpleRNN(3)):
        assert find_rule(layer)[0] is recurrent.RECURRENT


def test_bidirectional_is_two_recurrent_units():
    model = keras.Sequential([keras.Input((5, 3)), L.Bidirectional(L.LSTM(3), name="bi"), L.Dense(3)])
    units = [u for u in model_units(model) if u.rule is recurrent.RECURRENT]
    assert [u.layer.go_backwards for u in units] == [False, True]


@pytest.mark.parametrize(
    "build",
    [
        lambda: keras.Sequential([keras.Input((5, 3)), L.GRU(4, reset_after=False, name="rec"), L.Dense(3)]),
        lambda: keras.Sequential([keras.Input((5, 3)), L.LSTM(4, go_backwards=True, name="rec"), L.Dense(3)]),
    ],
)
def test_factorized_and_materialized_routes_agree(build, monkeypatch):
    model, x, y = _problem(build)
    results = {}
    for route in ("factorized", "materialized"):
        monkeypatch.setattr(recurrent, "positions_gram", functools.partial(base.positions_gram, route=route))
        results[route] = gradient_gram(model, x, y, loss=LOGITS, method="structured")
    np.testing.assert_allclose(results["factorized"].per_layer["rec"], results["materialized"].per_layer["rec"], 1e-5)
    _check_blocks(model, x, y, results["factorized"])
