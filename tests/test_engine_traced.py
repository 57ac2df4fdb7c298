"""The compiled paths (``engine.traced``): a traced capture pass and one graph for the traceable rules'
products, against the naive per-example loop on every architecture of ``engine_cases``.

A model's second Gram of the same shape runs the traced capture; these tests make sure that every
case is exact there too, that the graphs read the current weights, follow a frozen layer, and that the
cache they live in neither leaks the model nor reaches its saved file.
"""

import gc
import warnings
import weakref

import keras
import numpy as np
import pytest
from engine_cases import CASES, case_named
from reference import reference_gram, relative_error

from keras_stiffness import gradient_gram
from keras_stiffness.engine import traced
from keras_stiffness.engine.api import ModelFacts
from keras_stiffness.engine.model_cache import ATTRIBUTE, model_cache

pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning")

#: Cases whose every layer is a Dense on one position per example: all of them go into the products graph.
ALL_DENSE = ["mlp_logits", "mlp_softmax_compiled", "functional_branches", "nested_models", "mse_regression"]


def _facts(model, method="structured"):
    """The cached facts of the model's (last) Gram computation."""
    entries = [v for _, v in model_cache(model)._entries.values() if isinstance(v, ModelFacts) and v.method == method]
    return entries[-1]


def _twice(model, x, y, loss, precision):
    """The second of two equal calls: the first runs eagerly, the second traced (COMPILE_AFTER = 2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallback warnings are tested in test_engine_exactness
        first = gradient_gram(model, x, y, loss=loss, method="structured", precision=precision)
        second = gradient_gram(model, x, y, loss=loss, method="structured", precision=precision)
    return first, second


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_traced_gram_matches_reference(name, precision):
    case = case_named(name)
    model, x, y = case.make()
    ref = reference_gram(model, x, y, case.loss)
    first, second = _twice(model, x, y, case.loss, precision)
    facts = _facts(model)
    assert facts.traced.traced == 1 and facts.traced.failed is None  # every case's capture traces
    for result in (first, second):
        assert relative_error(result.total, ref.total) < 1e-5
        np.testing.assert_allclose(result.losses, ref.losses, rtol=1e-5, atol=1e-7)
        scale = np.linalg.norm(ref.total)
        for layer_name, block in result.per_layer.items():
            assert np.linalg.norm(block - ref.block(layer_name)) / scale < 1e-5, layer_name
    np.testing.assert_allclose(sum(second.per_layer.values()), second.total, rtol=1e-10, atol=1e-12)
    assert set(second.per_layer) == set(first.per_layer) and second.rules == first.rules
    in_graph = facts.products.in_graph
    assert in_graph <= {u.name for u in facts.layered if u.rule is not None and u.rule.traceable}
    if name in ALL_DENSE:
        assert in_graph == set(second.per_layer)


def test_first_call_eager_second_traced():
    model, x, y = case_named("mlp_logits").make()
    loss = case_named("mlp_logits").loss
    gradient_gram(model, x, y, loss=loss)
    facts = _facts(model)
    assert (facts.traced.traced, facts.products.traced) == (0, 0)
    gradient_gram(model, x, y, loss=loss)
    assert (facts.traced.traced, facts.products.traced) == (1, 1)
    gradient_gram(model, x[:5], y[:5], loss=loss)  # a new shape is counted afresh: eager again
    assert (facts.traced.traced, facts.products.traced) == (1, 1)


def test_traced_graphs_read_the_current_weights():
    case = case_named("mlp_logits")
    model, x, y = case.make()
    _twice(model, x, y, case.loss, "float32")
    rng = np.random.default_rng(5)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype("float32") * 0.3)
    ref = reference_gram(model, x, y, case.loss)
    result = gradient_gram(model, x, y, loss=case.loss)
    assert _facts(model).traced.traced == 1  # the same graph, run again
    assert relative_error(result.total, ref.total) < 1e-5


def test_freezing_a_layer_after_tracing_drops_its_block():
    case = case_named("mlp_logits")
    model, x, y = case.make()
    _twice(model, x, y, case.loss, "float32")
    model.layers[0].trainable = False
    ref = reference_gram(model, x, y, case.loss)
    result = gradient_gram(model, x, y, loss=case.loss)
    assert model.layers[0].name not in result.per_layer
    assert relative_error(result.total, ref.total) < 1e-5


def test_results_are_read_only():
    case = case_named("mlp_logits")
    model, x, y = case.make()
    for result in _twice(model, x, y, case.loss, "float32"):
        with pytest.raises(ValueError, match="read-only"):
            result.total[0, 0] = 1.0
        copy = np.array(result.total)
        copy[0, 0] = 1.0


def test_cache_dies_with_the_model_and_stays_out_of_its_file(tmp_path):
    case = case_named("mlp_logits")
    model, x, y = case.make()
    _twice(model, x, y, case.loss, "float32")
    assert len(model_cache(model)) == 2  # the units, and the facts of this loss and probe shape
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert ATTRIBUTE not in loaded.__dict__
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    dead = weakref.ref(model)
    del model, loaded
    gc.collect()
    assert dead() is None


def test_compile_after_zero_never_traces(monkeypatch):
    monkeypatch.setattr(traced, "COMPILE_AFTER", 0)
    case = case_named("mlp_logits")
    model, x, y = case.make()
    _twice(model, x, y, case.loss, "float32")
    facts = _facts(model)
    assert (facts.traced.traced, facts.products.traced) == (0, 0)


def test_a_fresh_keras_loss_per_call_reuses_the_graphs():
    """A Keras loss is keyed by its class and config: ``loss=SparseCategoricalCrossentropy(...)`` written
    in the call compiles once; a plain function is keyed by identity."""
    model, x, y = case_named("mlp_logits").make()
    for _ in range(3):
        gradient_gram(model, x, y, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert _facts(model).traced.traced == 1
    for _ in range(2):
        gradient_gram(model, x, y, loss=lambda t, p: keras.losses.sparse_categorical_crossentropy(t, p, True))
    assert _facts(model).traced.traced == 0  # two different functions: two entries, each used once
