"""The EinsumDense rule's edges: letter classification, the two exact routes, frozen and LoRA weights,
letters repeated inside one operand, a shared layer, and the activation patch it relies on.

Whole architectures (MultiHeadAttention, transformer blocks, several equations) are cases of
``tests/engine_cases.py``; here the checks that need a table or a model of their own.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import layers as L
from reference import reference_gram, relative_error

from keras_stiffness import gradient_gram
from keras_stiffness.engine.rules.einsum import (
    bias_targets,
    classify,
    einsum_unsupported,
    expand_ellipsis,
    shared_positions_gram,
)

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

#: equation, input rank -> (positions T, contracted D, produced E, shared H, summed).
CLASSIFICATION = [
    ("ab,bc->ac", 2, ("", "b", "c", "", "")),
    ("abc,cd->abd", 3, ("b", "c", "d", "", "")),
    ("abc,cde->abde", 3, ("b", "c", "de", "", "")),
    ("abcd,cde->abe", 4, ("b", "cd", "e", "", "")),
    ("abc,bc->abc", 3, ("", "", "", "bc", "")),
    ("abc,bcd->abd", 3, ("", "c", "d", "b", "")),
    ("abc,cbd->abd", 3, ("", "c", "d", "b", "")),
    ("abc,cd->ad", 3, ("", "c", "d", "", "b")),
    ("aBc,cD->aBD", 3, ("B", "c", "D", "", "")),
    ("...b,bc->...c", 4, ("de", "b", "c", "", "")),  # batch 'a', fresh position letters 'd', 'e'
    ("ab...,bc->ac...", 4, ("de", "b", "c", "", "")),
    ("abb,bc->ac", 3, ("", "b", "c", "", "")),  # the input's diagonal
    ("ab,bb->ab", 2, ("", "", "", "b", "")),  # the kernel's diagonal
]


@pytest.mark.parametrize("equation,ndim,expected", CLASSIFICATION)
def test_letter_classification(equation, ndim, expected):
    s = classify(*expand_ellipsis(equation, ndim))
    assert s.batch == s.inputs[0] == s.output[0]
    assert (s.positions, s.contracted, s.produced, s.shared, s.summed) == expected


@pytest.mark.parametrize(
    "equation,ndim,match",
    [
        ("ab,bc->ca", 2, "batch letter 'a' to lead the output"),
        ("abc,acd->abd", 3, "not to index the kernel"),
        ("ab,bcx->ac", 2, r"found \['x'\] in one only"),
        ("ab,bc->acc", 2, "each output letter once"),
    ],
)
def test_classification_rejects_mixing_or_stray_letters(equation, ndim, match):
    with pytest.raises(ValueError, match=match):
        classify(*expand_ellipsis(equation, ndim))


@pytest.mark.parametrize(
    "equation,ndim,match",
    [
        ("ab,bc", 2, "expected the EinsumDense form"),
        ("abc,cd->abd", 2, "expected rank 3"),
        ("...b,b...->c", 3, "form"),
        ("a.b,bc->ac", 2, "form"),
    ],
)
def test_malformed_equations_say_what_was_expected(equation, ndim, match):
    with pytest.raises(ValueError, match=match):
        expand_ellipsis(equation, ndim)


def test_batch_mixing_layer_is_unsupported():
    reason = einsum_unsupported(L.EinsumDense("abc,acd->abd", (3, 4)))
    assert reason is not None and "batch letter" in reason


@pytest.mark.parametrize("shape", [(6, 5, 1, 4, 3), (6, 3, 2, 4, 5), (6, 1, 3, 2, 2)])
def test_factorized_and_materialized_routes_agree(shape):
    n, t, h, din, dout = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, t, h, din)).astype(np.float32)
    d = rng.standard_normal((n, t, h, dout)).astype(np.float32)
    j = np.einsum("nthd,nthe->nhde", a.astype(np.float64), d.astype(np.float64)).reshape(n, -1)
    expected = j @ j.T
    for route in ("factorized", "materialized", None):
        for precision in ("float32", "float64"):
            got = shared_positions_gram(a, d, route=route, products=precision)
            assert relative_error(got, expected) < (1e-6 if precision == "float32" else 1e-12), (route, precision)


def _gram_vs_reference(model, x, y, method="structured"):
    ref = reference_gram(model, x, y, LOGITS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gradient_gram(model, x, y, loss=LOGITS, method=method)
    assert relative_error(result.total, ref.total) < 1e-5
    return result, ref, [str(w.message) for w in caught]


def _probes(shape, n=7):
    rng = np.random.default_rng(3)
    return rng.standard_normal((n, *shape)).astype(np.float32), np.arange(n) % 3


def test_frozen_kernel_gives_exactly_the_bias_block():
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((4, 5)),
            L.EinsumDense("abc,cde->abde", (4, 2, 3), bias_axes="de", activation="tanh", name="proj"),
            L.Flatten(),
            L.Dense(3, name="head"),
        ]
    )
    proj = model.get_layer("proj")
    proj.kernel.trainable = False
    x, y = _probes((4, 5))
    result, ref, _ = _gram_vs_reference(model, x, y)
    assert result.rules["proj"] == "einsum_dense"
    bias_path = proj.bias.path
    np.testing.assert_allclose(result.per_layer["proj"], ref.per_variable[bias_path], rtol=1e-5, atol=1e-9)


def test_lora_goes_to_the_fallback_with_a_warning():
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [keras.Input((3, 4)), L.EinsumDense("abc,cd->abd", (3, 5), bias_axes="d", name="lora"), L.Flatten(), L.Dense(3)]
    )
    layer = model.get_layer("lora")
    layer.enable_lora(2)
    layer.lora_kernel_b.assign(np.random.default_rng(0).normal(size=layer.lora_kernel_b.shape).astype("float32"))
    x, y = _probes((3, 4))
    result, _, messages = _gram_vs_reference(model, x, y)
    assert result.rules["lora"] == "fallback:jacobian"
    assert any("'lora' (EinsumDense)" in m and "LoRA is enabled" in m for m in messages), messages


def test_letters_repeated_in_one_operand():
    """Diagonals of the input (``abb``) and of the kernel (``bb``); structured only, since TensorFlow
    cannot vectorize these einsum gradients for the whole-model jacobian."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((3, 3)),
            L.EinsumDense("abb,bc->ac", 4, bias_axes="c", activation="tanh", name="input_diagonal"),
            L.EinsumDense("ab,bb->ab", 4, activation="relu", name="kernel_diagonal"),
            L.Dense(3, name="head"),
        ]
    )
    x, y = _probes((3, 3))
    result, _, messages = _gram_vs_reference(model, x, y)
    assert set(result.rules.values()) == {"einsum_dense", "dense"}, messages


def test_bias_follows_the_add_the_model_computes():
    """A bias along a position letter whose size equals the last output axis: Keras' TensorFlow
    ``ops.add`` adds it along the LAST axis (a ``bias_add`` shortcut); the Gram must follow the model."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((4, 3)),
            L.EinsumDense("abc,cd->abd", (4, 4), bias_axes="b", activation="tanh", name="quirk"),
            L.Flatten(),
            L.Dense(3, name="head"),
        ]
    )
    assert bias_targets((4, 1), (None, 4, 4)).reshape(4, 4).tolist() == [[0, 1, 2, 3]] * 4
    assert bias_targets((4,), (None, 2, 4)).reshape(2, 4).tolist() == [[0, 1, 2, 3]] * 2
    assert bias_targets((3, 1), (None, 3, 2)).reshape(3, 2).tolist() == [[0, 0], [1, 1], [2, 2]]
    x, y = _probes((4, 3))
    result, _, _ = _gram_vs_reference(model, x, y)
    assert result.rules["quirk"] == "einsum_dense"


def test_shared_layer_adds_its_cross_terms():
    keras.utils.set_random_seed(5)
    inp = keras.Input((4, 3))
    shared = L.EinsumDense("abc,cd->abd", (None, 3), bias_axes="d", activation="tanh", name="shared")
    h = L.Concatenate(axis=1)([shared(inp), shared(shared(inp[:, :2]))])
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h)))
    x, y = _probes((4, 3))
    result, _, _ = _gram_vs_reference(model, x, y)
    assert result.rules["shared"] == "einsum_dense"


def test_einsum_dense_reads_its_activation_at_call_time():
    """``pre_activation_forward`` removes ``activation`` on the instance to tap the pre-activation."""
    from keras_stiffness import keras_compat

    layer = L.EinsumDense("ab,bc->ac", 3, bias_axes="c", activation="relu")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    layer(x)
    with keras_compat.patched_attribute(layer, "activation", None):
        z = np.asarray(layer(x))
    expected = x @ np.asarray(layer.kernel) + np.asarray(layer.bias)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
    assert (np.asarray(layer(x)) >= 0).all()
