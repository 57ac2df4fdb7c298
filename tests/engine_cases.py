"""The architectures every Gram method is checked on, as data (one entry per problem, BackPACK style).

Each :class:`Case` names a small seeded Keras model (a few hundred to a few thousand weights), how to
draw its probes and labels, and the loss. ``tests/test_engine_exactness.py`` runs one short test over
all of them and every method against the naive reference in ``tests/reference.py``; adding a layer
family to the engine means adding one entry to :data:`CASES`.

Layers are named explicitly so that expected fallbacks and the per-layer blocks can be named.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Tuple

import keras
import numpy as np
from keras import layers as L

SEED = 1234


@dataclasses.dataclass(frozen=True)
class Case:
    """One problem: model, probes, labels, loss.

    Attributes:
        name: Test id.
        build: Returns a built Keras model (called after seeding).
        x: ``(rng, n) -> (n, ...)`` probe inputs, or a dict/list of ``(n, ...)`` arrays for a model
            with several inputs (see :func:`inputs`).
        y: ``(rng, n) -> (n, ...)`` labels or targets.
        loss: Passed to ``gradient_gram`` (a Keras ``Loss``, a name or a callable); ``None`` means the
            model is compiled with ``compiled_loss`` and ``gradient_gram`` uses that.
        compiled_loss: The loss the model is compiled with when ``loss`` is None.
        fallback: Names of the layers expected to use the exact jacobian fallback.
        auto_method: The method ``method="auto"`` is expected to pick.
        n: Number of probes.
    """

    name: str
    build: Callable[[], Any]
    x: Callable[[np.random.Generator, int], np.ndarray]
    y: Callable[[np.random.Generator, int], np.ndarray]
    loss: Any = None
    compiled_loss: Any = None
    fallback: Tuple[str, ...] = ()
    auto_method: str = "structured"
    n: int = 7

    def make(self) -> tuple:
        """A freshly built, seeded ``(model, x, y)``."""
        keras.utils.set_random_seed(SEED)
        model = self.build()
        if self.loss is None:
            model.compile(loss=self.compiled_loss)
        rng = np.random.default_rng(SEED)
        return model, self.x(rng, self.n), self.y(rng, self.n)


# --- probe and label generators ---------------------------------------------------------------


def normal(*shape) -> Callable:
    """Standard normal float32 inputs of per-example ``shape``."""
    return lambda rng, n: rng.standard_normal((n, *shape)).astype(np.float32)


def inputs(**parts: Callable) -> Callable:
    """A dict of probe inputs, one generator per input name (drawn in the order given)."""
    return lambda rng, n: {name: make(rng, n) for name, make in parts.items()}


def input_list(*parts: Callable) -> Callable:
    """A list of probe inputs, one generator per input (drawn in order)."""
    return lambda rng, n: [make(rng, n) for make in parts]


def classes(k: int) -> Callable:
    """Integer labels in ``[0, k)``, every class present when ``n >= k``."""
    return lambda rng, n: rng.permutation(np.arange(n) % k).astype(np.int64)


def one_hot(k: int) -> Callable:
    return lambda rng, n: np.eye(k, dtype=np.float32)[classes(k)(rng, n)]


def binary(*shape) -> Callable:
    return lambda rng, n: rng.integers(0, 2, (n, *shape)).astype(np.float32)


def tokens(length: int, vocab: int) -> Callable:
    """Token ids from a vocabulary small enough that ids repeat within and across examples."""

    def draw(rng, n):
        ids = rng.integers(0, vocab, (n, length))
        ids[:, 1] = ids[:, 0]  # a repeat inside every sequence
        ids[1] = ids[0][::-1]  # the same tokens in two examples
        return ids.astype(np.int32)

    return draw


def padded_tokens(length: int, vocab: int) -> Callable:
    """Ids in ``[1, vocab)`` with trailing zeros (padding) of several lengths; every sequence starts
    with a real token, so masked averages stay defined."""

    def draw(rng, n):
        ids = tokens(length, vocab)(rng, n) % (vocab - 1) + 1
        for i in range(n):
            ids[i, length - i % 3 :] = 0  # no, one or two padding steps
        return ids.astype(np.int32)

    return draw


def gappy_tokens(length: int, vocab: int) -> Callable:
    """Ids in ``[1, vocab)`` with zeros (padding, masked) at the start, inside or at the end of some
    sequences and none in others."""

    def draw(rng, n):
        ids = rng.integers(1, vocab, (n, length))
        for i in range(1, n):
            ids[i, length - i % 3 :] = 0  # trailing padding: none, one or two steps
        ids[2, 0] = ids[4, :2] = ids[5, 2] = 0  # leading and inner padding
        return ids.astype(np.int32)

    return draw


# --- models -----------------------------------------------------------------------------------


def _seq(input_shape, *layers, dtype=None, name="model"):
    model = keras.Sequential([keras.Input(input_shape, dtype=dtype), *layers], name=name)
    return model


def mlp_logits():
    return _seq(
        (12,),
        L.Dense(16, activation="relu", name="d1"),
        L.Dense(8, activation="tanh", use_bias=False, name="d2_nobias"),
        L.Dense(4, name="logits"),
    )


def mlp_softmax():
    return _seq((10,), L.Dense(12, activation="tanh", name="d1"), L.Dense(5, activation="softmax", name="probs"))


def functional_branches():
    inp = keras.Input((10,))
    h = L.Dense(8, activation="relu", name="stem")(inp)
    r = L.Add(name="residual")([h, L.Dense(8, activation="tanh", name="branch_a")(h)])
    b = L.Dense(5, activation="relu", name="branch_b")(inp)
    c = L.Concatenate(name="concat")([r, b])
    return keras.Model(inp, L.Dense(3, name="head")(c), name="branches")


def two_inputs_dict():
    """Two named inputs (a vector and a sequence) merged after their own branches."""
    a = keras.Input((5,), name="a")
    b = keras.Input((4, 3), name="b")
    ha = L.Dense(6, activation="tanh", name="branch_a")(a)
    hb = L.Dense(4, activation="relu", name="branch_b")(L.Flatten()(b))
    out = L.Dense(3, name="head")(L.Concatenate()([ha, hb]))
    return keras.Model({"a": a, "b": b}, out, name="two_inputs_dict")


def two_inputs_list():
    """Two positional inputs, one a token sequence (an integer input) and one a vector."""
    tokens_in = keras.Input((4,), dtype="int32", name="tokens")
    v = keras.Input((6,), name="v")
    e = L.Flatten()(L.Embedding(9, 3, name="embed")(tokens_in))
    h = L.Dense(5, activation="tanh", name="dense_v")(v)
    out = L.Dense(3, name="head")(L.Concatenate()([e, h]))
    return keras.Model([tokens_in, v], out, name="two_inputs_list")


def shared_dense():
    inp = keras.Input((6,))
    shared = L.Dense(6, activation="tanh", name="shared")
    h1 = shared(shared(inp))  # the same weights twice in a row
    h2 = shared(L.Dense(6, name="side")(inp))  # and a third time on another branch
    out = L.Dense(3, name="head")(L.Concatenate()([h1, h2]))
    return keras.Model(inp, out, name="shared_model")


def nested():
    inner = keras.Sequential(
        [keras.Input((7,)), L.Dense(6, activation="relu", name="inner_a"), L.Dense(5, name="inner_b")],
        name="inner",
    )
    inp = keras.Input((7,))
    out = L.Dense(3, name="head")(L.Activation("tanh")(inner(inp)))
    return keras.Model(inp, out, name="outer")


def frozen():
    model = _seq(
        (6,),
        L.Dense(8, activation="tanh", trainable=False, name="frozen"),
        L.BatchNormalization(name="bn"),
        L.Dense(3, name="head"),
    )
    model.get_layer("bn").gamma.trainable = False  # only β of the normalization trains
    _randomize_batchnorm(model)
    return model


def frozen_kernel():
    """A Dense kernel frozen while its bias trains (and, after it, a frozen bias with a training kernel)."""
    model = _seq(
        (6,),
        L.Dense(7, activation="tanh", name="kernel_frozen"),
        L.Dense(5, activation="relu", name="bias_frozen"),
        L.Dense(3, name="head"),
    )
    model.get_layer("kernel_frozen").kernel.trainable = False
    model.get_layer("bias_frozen").bias.trainable = False
    return model


def tied_weights():
    """An output projection tied to the embedding table (the same variable in two layers)."""

    class TiedOutput(L.Layer):
        """``h @ Eᵀ`` with the embedding's own table ``E`` (tracked here too: one variable, two layers)."""

        def __init__(self, table, **kwargs):
            super().__init__(**kwargs)
            self.table = table

        def call(self, h):
            return keras.ops.matmul(h, keras.ops.transpose(self.table))

    inp = keras.Input((4,), dtype="int32")
    embedding = L.Embedding(6, 5, name="embedding")
    h = L.GlobalAveragePooling1D()(L.Dense(5, activation="tanh", name="mix")(embedding(inp)))
    embedding.build((None, 4))
    out = TiedOutput(embedding.embeddings, name="tied")(h)
    return keras.Model(inp, out, name="tied_model")


def lora_dense():
    model = _seq((6,), L.Dense(5, activation="tanh", name="d1"), L.Dense(3, name="head"))
    model.get_layer("d1").enable_lora(2)
    lora = model.get_layer("d1")
    lora.lora_kernel_b.assign(np.random.default_rng(0).normal(size=lora.lora_kernel_b.shape).astype("float32"))
    return model


def resnet20():
    """The paper's ResNet20 (no batch normalization) on tiny images: 19 convolutions, projections, adds."""
    from keras_stiffness.app.models import paper_resnet20

    return paper_resnet20((6, 6, 1), 3)


def dense_sequence():
    return _seq(
        (5, 7),
        L.Dense(6, activation="relu", name="per_step"),
        L.Dense(4, activation="tanh", name="per_step_2"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def subclassed():
    class Looped(keras.Model):
        """Python control flow: a skip connection and a Dense layer applied in a loop."""

        def __init__(self):
            super().__init__(name="looped")
            self.inp = L.Dense(8, activation="relu", name="enter")
            self.skip = L.Dense(8, use_bias=False, name="skip")
            self.step = L.Dense(8, activation="tanh", name="step")
            self.out = L.Dense(4, name="exit")

        def call(self, x, training=False):
            h = self.inp(x)
            if x.shape[-1] == 9:
                h = h + self.skip(x)
            for _ in range(2):
                h = self.step(h) + h
            return self.out(h)

    model = Looped()
    model(np.zeros((1, 9), np.float32))
    return model


def conv1d():
    return _seq(
        (16, 3),
        L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu", name="causal"),
        L.Conv1D(5, 2, strides=2, padding="valid", activation="tanh", name="strided"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def conv2d():
    return _seq(
        (8, 8, 4),
        L.Conv2D(4, 3, padding="same", activation="relu", name="same"),
        L.Conv2D(6, 3, strides=2, padding="valid", groups=2, activation="relu", name="grouped"),
        L.Conv2D(4, 2, strides=(1, 2), padding="same", use_bias=False, name="nobias"),
        L.GlobalAveragePooling2D(),
        L.Dense(3, name="head"),
    )


def conv2d_channels_first():
    return _seq(
        (3, 7, 7),
        L.Conv2D(4, 3, padding="same", data_format="channels_first", activation="relu", name="cf"),
        # 4 filters on a 3x3 output: with 3 filters Keras' TF ops.add would add the bias along the
        # last spatial axis (its bias_add shortcut picks NHWC when shape[-1] == filters).
        L.Conv2D(4, 2, strides=2, data_format="channels_first", name="cf_strided"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def conv2d_channels_first_bias_on_last_axis():
    """3 filters on a 3×3 output: Keras' TF ops.add then adds the bias along the LAST spatial axis
    (its bias_add shortcut picks NHWC when shape[-1] == filters); the Gram must follow the model."""
    return _seq(
        (3, 7, 7),
        L.Conv2D(3, 2, strides=2, data_format="channels_first", activation="relu", name="cf_quirk"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def conv3d():
    return _seq(
        (4, 5, 5, 2),
        L.Conv3D(3, 2, padding="valid", activation="relu", name="c3"),
        L.Conv3D(2, 2, strides=2, padding="same", name="c3_strided"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def depthwise():
    return _seq(
        (7, 7, 3),
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu", name="dw"),
        L.DepthwiseConv2D(2, strides=2, use_bias=False, name="dw_strided"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def depthwise1d():
    return _seq(
        (10, 3),
        L.DepthwiseConv1D(3, depth_multiplier=2, dilation_rate=2, activation="tanh", name="dw1"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def separable2d():
    return _seq(
        (7, 7, 3),
        L.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", activation="relu", name="sep"),
        L.SeparableConv2D(4, 3, strides=2, name="sep_strided"),
        L.GlobalAveragePooling2D(),
        L.Dense(3, name="head"),
    )


def separable1d():
    return _seq(
        (12, 3),
        L.SeparableConv1D(4, 3, depth_multiplier=2, padding="same", activation="relu", name="sep1"),
        L.SeparableConv1D(3, 2, strides=2, dilation_rate=1, use_bias=False, name="sep1_strided"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def embedding():
    return _seq(
        (6,),
        L.Embedding(11, 4, name="embed"),
        L.GlobalAveragePooling1D(),
        L.Dense(3, name="head"),
        dtype="int32",
    )


def _randomize_batchnorm(model) -> None:
    """Non-trivial γ, β and moving statistics, so inference mode is really exercised."""
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.5, 0.3, shape).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, shape).astype(np.float32))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))


def batchnorm_dense():
    model = _seq(
        (9,),
        L.Dense(8, name="d1"),
        L.BatchNormalization(name="bn"),
        L.Activation("relu"),
        L.Dense(3, name="head"),
    )
    _randomize_batchnorm(model)
    return model


def batchnorm_conv():
    model = _seq(
        (6, 6, 2),
        L.Conv2D(4, 3, padding="same", name="conv"),
        L.BatchNormalization(axis=-1, name="bn_conv"),
        L.Activation("relu"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )
    _randomize_batchnorm(model)
    return model


def layernorm():
    return _seq(
        (5, 6),
        L.Dense(6, name="proj"),
        L.LayerNormalization(name="ln"),
        L.Dense(6, activation="relu", name="proj2"),
        L.LayerNormalization(rms_scaling=True, name="rms"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def recurrent():
    return _seq(
        (5, 3),
        L.LSTM(4, return_sequences=True, name="lstm"),
        L.GRU(3, name="gru"),
        L.Dense(3, name="head"),
    )


def lstm_only():
    return _seq((4, 2), L.LSTM(3, name="lstm"))


def simple_rnn():
    return _seq(
        (5, 3),
        L.SimpleRNN(4, return_sequences=True, name="rnn_seq"),
        L.SimpleRNN(3, activation="relu", name="rnn_last"),
        L.Dense(3, name="head"),
    )


def gru_reset_before():
    """GRU with ``reset_after=False``: the candidate's recurrent columns act on ``r ⊙ h``."""
    return _seq(
        (5, 3),
        L.GRU(4, reset_after=False, return_sequences=True, name="gru_seq"),
        L.GRU(3, reset_after=False, use_bias=False, name="gru_last"),
        L.Dense(3, name="head"),
    )


def gru_sequences():
    return _seq((5, 3), L.GRU(4, return_sequences=True, name="gru"), L.Flatten(), L.Dense(3, name="head"))


def go_backwards():
    return _seq(
        (5, 3),
        L.LSTM(4, go_backwards=True, return_sequences=True, name="lstm_back"),
        L.GRU(3, go_backwards=True, return_sequences=True, name="gru_back"),
        L.SimpleRNN(3, go_backwards=True, name="rnn_back"),
        L.Dense(3, name="head"),
    )


def bidirectional_lstm():
    """Bidirectional is walked into: its forward and backward LSTMs are units of their own."""
    return _seq(
        (5, 3),
        L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi"),
        L.Bidirectional(L.LSTM(2), merge_mode="sum", name="bi_last"),
        L.Dense(3, name="head"),
    )


def masked_gru():
    """Masked steps keep the previous state and output (zeros in Bidirectional: zero_output_for_mask)."""
    return _seq(
        (5,),
        L.Embedding(9, 4, mask_zero=True, name="embed"),
        L.GRU(4, return_sequences=True, name="gru_seq"),
        L.Bidirectional(L.GRU(2, return_sequences=True, reset_after=False), name="bi"),
        L.LSTM(3, name="lstm"),
        L.Dense(3, name="head"),
        dtype="int32",
    )


def lstm_nobias():
    return _seq((5, 3), L.LSTM(4, use_bias=False, name="lstm"), L.Dense(3, name="head"))


def lstm_dropout():
    """Dropout and recurrent dropout are off in inference mode (the only mode of the engine)."""
    return _seq((5, 3), L.LSTM(4, dropout=0.4, recurrent_dropout=0.4, name="lstm"), L.Dense(3, name="head"))


def lstm_initial_state():
    """Initial states computed by other layers: their gradient flows through the recurrence."""
    inp = keras.Input((5, 3))
    summary = L.Flatten()(inp)
    h0 = L.Dense(4, activation="tanh", name="h0")(summary)
    c0 = L.Dense(4, name="c0")(summary)
    h = L.LSTM(4, name="lstm")(inp, initial_state=[h0, c0])
    return keras.Model(inp, L.Dense(3, name="head")(h), name="initial_state")


def shared_gru():
    """One GRU called on two sequences: its weights add up over both calls."""
    inp = keras.Input((4, 3))
    gru = L.GRU(3, name="gru")
    h = L.Concatenate()([gru(inp), gru(L.Dense(3, activation="tanh", name="side")(inp))])
    return keras.Model(inp, L.Dense(3, name="head")(h), name="shared_gru")


def rnn_generic_cell():
    """The generic ``RNN`` wrapper has no rule (any cell may be inside): the exact fallback."""
    return _seq((4, 2), L.RNN(L.GRUCell(3), name="rnn"))


def attention():
    inp = keras.Input((4, 6))
    h = L.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(inp, inp)
    out = L.Dense(3, name="head")(L.Flatten()(h))
    return keras.Model(inp, out, name="attention")


def einsum_dense():
    """Three EinsumDense equations: on sequences, to several output letters, from several contracted
    letters; and one without bias."""
    return _seq(
        (5, 6),
        L.EinsumDense("abc,cd->abd", (5, 4), bias_axes="d", activation="relu", name="per_step"),
        L.EinsumDense("abc,cde->abde", (5, 2, 3), bias_axes="de", activation="tanh", name="heads"),
        L.EinsumDense("abcd,cde->abe", (5, 4), bias_axes="e", name="merge"),
        L.Flatten(),
        L.EinsumDense("ab,bc->ac", 3, name="head_nobias"),
    )


def einsum_dense_diagonal():
    """Letters in input, kernel and output (a weight per position/feature), and an input-only letter."""
    return _seq(
        (4, 6),
        L.EinsumDense("abc,bc->abc", (4, 6), bias_axes="bc", activation="tanh", name="diag"),
        L.EinsumDense("abc,bcd->abd", (4, 3), bias_axes="d", activation="relu", name="per_position"),
        L.EinsumDense("abc,cd->ad", 3, bias_axes="d", name="pooled_head"),
    )


def einsum_dense_ellipsis():
    """Ellipses on either side and a bias along a position letter. (Letters repeated inside one operand
    are in tests/test_rules_einsum.py: TensorFlow cannot vectorize their gradient for the jacobian.)"""
    return _seq(
        (3, 3, 4),
        L.EinsumDense("...c,cd->...d", 5, bias_axes="d", activation="relu", name="left_ellipsis"),
        L.EinsumDense("ab...,bc->ac...", 2, bias_axes="c", activation="tanh", name="right_ellipsis"),
        # A bias along output axis 1 of a rank-3 output would become an NCHW bias_add in Keras' TF
        # ops.add, which TF cannot vectorize for the jacobian method: here it runs along axis 2.
        L.EinsumDense("abcd,de->abce", (2, 3, 4), bias_axes="c", activation="tanh", name="position_bias"),
        L.Flatten(),
        L.Dense(3, name="head"),
    )


def transformer_encoder():
    """Embedding(mask_zero) → self-attention under the padding mask → residual, LayerNorm → FFN →
    residual, LayerNorm → masked average pooling → Dense."""
    inp = keras.Input((6,), dtype="int32")
    h = L.Embedding(13, 8, mask_zero=True, name="embed")(inp)
    a = L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(h, h)
    h = L.LayerNormalization(name="ln1")(L.Add()([h, a]))
    f = L.Dense(8, name="ffn_out")(L.Dense(12, activation="relu", name="ffn_in")(h))
    h = L.LayerNormalization(name="ln2")(L.Add()([h, f]))
    out = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h))
    return keras.Model(inp, out, name="encoder")


def causal_attention():
    """Causal self-attention with an explicit padding mask built from the token ids."""
    inp = keras.Input((5,), dtype="int32")
    h = L.Embedding(11, 6, name="embed")(inp)
    pad = keras.ops.not_equal(inp, 0)
    mask = keras.ops.logical_and(pad[:, None, :], pad[:, :, None])
    a = L.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(h, h, attention_mask=mask, use_causal_mask=True)
    out = L.Dense(3, name="head")(L.Flatten()(a))
    return keras.Model(inp, out, name="causal")


def cross_attention():
    """Queries from the first two steps (one Dense branch), keys and values from the last four (another)."""
    inp = keras.Input((6, 5))
    q = L.Dense(4, activation="tanh", name="q_branch")(inp[:, :2])
    kv = L.Dense(4, activation="tanh", name="kv_branch")(inp[:, 2:])
    a = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=2, output_shape=5, name="mha")(q, kv)
    out = L.Dense(3, name="head")(L.Flatten()(a))
    return keras.Model(inp, out, name="cross")


def attention_nobias_key_value():
    """``use_bias=False`` and a key different from the value (two Dense branches of one input)."""
    inp = keras.Input((4, 5))
    k = L.Dense(5, activation="tanh", name="k_branch")(inp)
    v = L.Dense(3, name="v_branch")(inp)
    a = L.MultiHeadAttention(num_heads=3, key_dim=2, use_bias=False, name="mha")(inp, v, key=k)
    out = L.Dense(3, name="head")(L.Flatten()(a))
    return keras.Model(inp, out, name="key_value")


def custom_weight():
    class ScaleShift(L.Layer):
        """A layer with its own weights and no rule: ``x * exp(s) + b``."""

        def build(self, input_shape):
            self.s = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="s")
            self.b = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="b")

        def call(self, x):
            return x * keras.ops.exp(self.s) + self.b

    return _seq((6,), L.Dense(5, activation="tanh", name="d1"), ScaleShift(name="scale"), L.Dense(3, name="head"))


def custom_container():
    class Block(L.Layer):
        """Holds two Dense layers and no weights of its own: the engine must look inside."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.up = L.Dense(8, activation="relu", name="up")
            self.down = L.Dense(6, name="down")

        def call(self, x):
            return x + self.down(self.up(x))

    return _seq((6,), Block(name="block"), L.Dense(3, name="head"))


def dropout():
    return _seq(
        (8,),
        L.Dense(10, activation="relu", name="d1"),
        L.Dropout(0.5),
        L.Dense(3, name="head"),
    )


def sigmoid_output():
    return _seq((6,), L.Dense(5, activation="relu", name="d1"), L.Dense(1, activation="sigmoid", name="prob"))


def onehot_softmax():
    return _seq((6,), L.Dense(7, activation="relu", name="d1"), L.Dense(4, activation="softmax", name="probs"))


def regression():
    return _seq((5,), L.Dense(6, activation="tanh", name="d1"), L.Dense(3, name="out"))


def regularized():
    return _seq(
        (6,),
        L.Dense(
            8,
            activation="relu",
            kernel_regularizer=keras.regularizers.L2(0.5),
            bias_regularizer=keras.regularizers.L1(0.5),
            activity_regularizer=keras.regularizers.L2(0.1),
            name="d1",
        ),
        L.Dense(3, kernel_regularizer=keras.regularizers.L2(1.0), name="head"),
    )


LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LOGITS_SUM = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

CASES = [
    Case("mlp_logits", mlp_logits, normal(12), classes(4), loss=LOGITS),
    Case("mlp_softmax_compiled", mlp_softmax, normal(10), classes(5), compiled_loss="sparse_categorical_crossentropy"),
    Case("functional_branches", functional_branches, normal(10), classes(3), loss=LOGITS),
    Case("shared_dense", shared_dense, normal(6), classes(3), loss=LOGITS),
    Case("two_inputs_dict", two_inputs_dict, inputs(a=normal(5), b=normal(4, 3)), classes(3), loss=LOGITS),
    Case("two_inputs_list", two_inputs_list, input_list(tokens(4, 9), normal(6)), classes(3), loss=LOGITS),
    Case("nested_models", nested, normal(7), classes(3), loss=LOGITS),
    Case("frozen_weights", frozen, normal(6), classes(3), loss=LOGITS),
    Case("frozen_kernel_and_bias", frozen_kernel, normal(6), classes(3), loss=LOGITS),
    # The tied table is measured by the whole loss's jacobian for that variable (unit "shared:…").
    Case("tied_weights", tied_weights, tokens(4, 6), classes(6), loss=LOGITS),
    Case("lora", lora_dense, normal(6), classes(3), loss=LOGITS, fallback=("d1",)),
    Case("resnet20", resnet20, normal(6, 6, 1), classes(3), compiled_loss="sparse_categorical_crossentropy", n=5),
    Case("dense_sequence", dense_sequence, normal(5, 7), classes(3), loss=LOGITS),
    Case("subclassed", subclassed, normal(9), classes(4), loss=LOGITS),
    Case("conv1d", conv1d, normal(16, 3), classes(3), loss=LOGITS),
    Case("conv2d", conv2d, normal(8, 8, 4), classes(3), loss=LOGITS),
    Case("conv2d_channels_first", conv2d_channels_first, normal(3, 7, 7), classes(3), loss=LOGITS),
    Case(
        "conv2d_channels_first_bias_on_last_axis",
        conv2d_channels_first_bias_on_last_axis,
        normal(3, 7, 7),
        classes(3),
        loss=LOGITS,
    ),
    Case("conv3d", conv3d, normal(4, 5, 5, 2), classes(3), loss=LOGITS),
    Case("depthwise2d", depthwise, normal(7, 7, 3), classes(3), loss=LOGITS),
    Case("depthwise1d", depthwise1d, normal(10, 3), classes(3), loss=LOGITS),
    Case("separable2d", separable2d, normal(7, 7, 3), classes(3), loss=LOGITS),
    Case("separable1d", separable1d, normal(12, 3), classes(3), loss=LOGITS),
    Case("embedding", embedding, tokens(6, 11), classes(3), loss=LOGITS),
    Case("batchnorm_dense", batchnorm_dense, normal(9), classes(3), loss=LOGITS),
    Case("batchnorm_conv", batchnorm_conv, normal(6, 6, 2), classes(3), loss=LOGITS),
    Case("layernorm", layernorm, normal(5, 6), classes(3), loss=LOGITS),
    Case("recurrent", recurrent, normal(5, 3), classes(3), loss=LOGITS),
    Case("lstm_only", lstm_only, normal(4, 2), classes(3), loss=LOGITS),
    Case("simple_rnn", simple_rnn, normal(5, 3), classes(3), loss=LOGITS),
    Case("gru_reset_before", gru_reset_before, normal(5, 3), classes(3), loss=LOGITS),
    Case("gru_sequences", gru_sequences, normal(5, 3), classes(3), loss=LOGITS),
    Case("go_backwards", go_backwards, normal(5, 3), classes(3), loss=LOGITS),
    Case("bidirectional_lstm", bidirectional_lstm, normal(5, 3), classes(3), loss=LOGITS),
    Case("masked_gru", masked_gru, gappy_tokens(5, 9), classes(3), loss=LOGITS),
    Case("lstm_nobias", lstm_nobias, normal(5, 3), classes(3), loss=LOGITS),
    Case("lstm_dropout", lstm_dropout, normal(5, 3), classes(3), loss=LOGITS),
    Case("lstm_initial_state", lstm_initial_state, normal(5, 3), classes(3), loss=LOGITS),
    Case("shared_gru", shared_gru, normal(4, 3), classes(3), loss=LOGITS),
    Case(
        "rnn_generic_cell",
        rnn_generic_cell,
        normal(4, 2),
        classes(3),
        loss=LOGITS,
        fallback=("rnn",),
        auto_method="jacobian",
    ),
    # MultiHeadAttention is measured through its EinsumDense projections (query, key, value, output).
    Case("attention", attention, normal(4, 6), classes(3), loss=LOGITS),
    Case("einsum_dense", einsum_dense, normal(5, 6), classes(3), loss=LOGITS),
    Case("einsum_dense_diagonal", einsum_dense_diagonal, normal(4, 6), classes(3), loss=LOGITS),
    Case("einsum_dense_ellipsis", einsum_dense_ellipsis, normal(3, 3, 4), classes(3), loss=LOGITS),
    Case("transformer_encoder", transformer_encoder, padded_tokens(6, 13), classes(3), loss=LOGITS),
    Case("causal_attention", causal_attention, padded_tokens(5, 11), classes(3), loss=LOGITS),
    Case("cross_attention", cross_attention, normal(6, 5), classes(3), loss=LOGITS),
    Case("attention_nobias_key_value", attention_nobias_key_value, normal(4, 5), classes(3), loss=LOGITS),
    Case("custom_weight", custom_weight, normal(6), classes(3), loss=LOGITS, fallback=("scale",)),
    Case("custom_container", custom_container, normal(6), classes(3), loss=LOGITS),
    Case("dropout", dropout, normal(8), classes(3), loss=LOGITS),
    Case("sigmoid_bce", sigmoid_output, normal(6), binary(1), loss="binary_crossentropy"),
    # Labels of shape (N,) for an (N, 1) output: accepted by Keras' fit and by the engine's label check.
    Case("sigmoid_bce_flat_labels", sigmoid_output, normal(6), binary(), compiled_loss="binary_crossentropy"),
    Case("onehot_cce", onehot_softmax, normal(6), one_hot(4), loss="categorical_crossentropy"),
    Case("mse_regression", regression, normal(5), normal(3), loss="mse"),
    Case("loss_reduction_sum", mlp_logits, normal(12), classes(4), loss=LOGITS_SUM),
    Case("regularized", regularized, normal(6), classes(3), loss=LOGITS),
]


def case_named(name: str) -> Case:
    """The case called ``name``."""
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)
