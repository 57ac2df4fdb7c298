"""Every Gram method on every architecture of ``engine_cases`` against the naive per-example loop.

One parametrized test over cases × methods (a new method or a new case is covered without a new
test), plus the fallback policy: a layer without a rule is named once in a warning and recorded as
``"fallback:jacobian"``.
"""

import functools
import warnings

import numpy as np
import pytest
from engine_cases import CASES, case_named
from reference import reference_gram, relative_error

from keras_stiffness import gradient_gram

pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning")

METHODS = ["structured", "auto", "jacobian"]
#: Every method in each product precision it has (the jacobian reference is float64 throughout).
METHOD_PRECISIONS = [(m, p) for m in METHODS for p in ("float32", "float64") if m != "jacobian" or p == "float64"]
FALLBACK = "fallback:jacobian"


@functools.lru_cache(maxsize=None)
def problem(name):
    """``(model, x, y, loss, reference)`` for a case, built once per session."""
    case = case_named(name)
    model, x, y = case.make()
    return model, x, y, case.loss, reference_gram(model, x, y, case.loss)


@pytest.mark.parametrize("method,precision", METHOD_PRECISIONS)
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_gram_matches_reference(name, method, precision):
    case = case_named(name)
    model, x, y, loss, ref = problem(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallback warnings: tested below
        result = gradient_gram(model, x, y, loss=loss, method=method, precision=precision)

    assert result.total.shape == (case.n, case.n)
    assert relative_error(result.total, ref.total) < 1e-5
    np.testing.assert_allclose(sum(result.per_layer.values()), result.total, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.losses, ref.losses, rtol=1e-5, atol=1e-7)
    scale = np.linalg.norm(ref.total)
    for layer_name, block in result.per_layer.items():
        assert np.linalg.norm(block - ref.block(layer_name)) / scale < 1e-5, layer_name
    covered = [p for p in ref.per_variable if any(u in p.split("/") or u == f"shared:{p}" for u in result.per_layer)]
    assert covered == list(ref.per_variable)  # every variable belongs to some reported block
    resolved = case.auto_method if method == "auto" else method
    if resolved == "structured":
        assert {u for u, r in result.rules.items() if r == FALLBACK} == set(case.fallback)
    else:
        assert set(result.rules.values()) == {"jacobian"}


@pytest.mark.parametrize("name", ["mlp_logits", "rnn_generic_cell"])
def test_auto_reports_the_method_it_used(name):
    """``GramResult.method`` is documented as "the method used": auto resolves to one of the two."""
    case = case_named(name)
    model, x, y, loss, _ = problem(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = gradient_gram(model, x, y, loss=loss, method="auto")
    assert result.method == case.auto_method


def test_fallback_warns_once_naming_the_layer():
    model, x, y = case_named("custom_weight").make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gradient_gram(model, x, y, loss=case_named("custom_weight").loss, method="structured")
        result = gradient_gram(model, x, y, loss=case_named("custom_weight").loss, method="structured")
    messages = [str(w.message) for w in caught]
    assert sum("'scale' (ScaleShift)" in m for m in messages) == 1, messages
    assert result.rules == {"d1": "dense", "scale": FALLBACK, "head": "dense"}


@pytest.mark.parametrize(
    "name", ["conv2d", "embedding", "recurrent", "masked_gru", "separable2d", "shared_dense", "two_inputs_dict"]
)
def test_capture_in_chunks_is_exact(name):
    """Probes split over several capture passes (chunk_size=3 for N=7) give the same Gram."""
    model, x, y, loss, ref = problem(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = gradient_gram(model, x, y, loss=loss, method="structured", chunk_size=3)
    assert relative_error(result.total, ref.total) < 1e-5
    np.testing.assert_allclose(result.losses, ref.losses, rtol=1e-5, atol=1e-7)
