"""Gram -> stiffness -> class aggregates, checked against naive per-pair loops over the definitions."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from keras_stiffness.math.stiffness import (
    check_measures,
    class_stiffness,
    cosine_stiffness,
    pair_set_blocks,
    sign_stiffness,
    stiffness,
    stiffness_matrices,
    within_between,
    zero_norm_mask,
)


def naive_cos(g, i, j):
    ni, nj = np.linalg.norm(g[i]), np.linalg.norm(g[j])
    return 0.0 if ni == 0 or nj == 0 else float(g[i] @ g[j]) / (ni * nj)


def naive_class_matrix(g_rows, g_cols, la, lb, n_classes, same_set, measure):
    """Mean over pairs from the definitions, one pair at a time."""
    g = np.concatenate([g_rows, g_cols])
    off = len(g_rows)
    total, count = np.zeros((n_classes, n_classes)), np.zeros((n_classes, n_classes), int)
    for i in range(len(g_rows)):
        for j in range(len(g_cols)):
            if same_set and i == j:
                continue
            c = naive_cos(g, i, off + j)
            total[la[i], lb[j]] += np.sign(c) if measure == "sign" else c
            count[la[i], lb[j]] += 1
    with np.errstate(invalid="ignore"):
        return total / count, count


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_cosine_and_sign_match_definitions_with_a_zero_gradient():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(12, 5))
    g[4] = 0.0
    s_cos, zero = cosine_stiffness(g @ g.T)
    s_sign = sign_stiffness(g @ g.T)
    ref = np.array([[naive_cos(g, i, j) for j in range(12)] for i in range(12)])
    np.fill_diagonal(ref, [0.0 if i == 4 else 1.0 for i in range(12)])
    np.testing.assert_allclose(s_cos, ref, atol=1e-12)
    np.testing.assert_array_equal(s_sign, np.sign(ref))
    assert zero.tolist() == [i == 4 for i in range(12)]
    assert not s_cos[4].any() and not s_cos[:, 4].any() and np.isfinite(s_cos).all()


def test_self_stiffness_is_one_and_values_are_clipped():
    g = np.array([[3.0, 4.0], [3.0, 4.0], [1e-3, 0.0]])
    s, zero = cosine_stiffness(g @ g.T)
    assert s[0, 1] == 1.0 and np.all(np.abs(s) <= 1.0) and np.all(np.diagonal(s) == 1.0)
    assert not zero.any()


def test_zero_norm_is_relative_and_an_all_zero_gram_is_all_zero():
    gram = np.diag([1.0, 1e-31, 0.0])
    assert zero_norm_mask(gram).tolist() == [False, True, True]
    s, zero = cosine_stiffness(np.zeros((3, 3)))
    assert zero.all() and not s.any()
    assert not sign_stiffness(np.zeros((3, 3))).any()


def test_sign_of_rounding_level_cross_terms_is_zero():
    gram = np.array([[1.0, 1e-14, -1e-9], [1e-14, 1.0, 0.0], [-1e-9, 0.0, 1.0]])
    assert sign_stiffness(gram).tolist() == [[1, 0, -1], [0, 1, 0], [-1, 0, 1]]


def test_dispatch_and_measure_validation():
    gram = np.array([[1.0, -0.5], [-0.5, 1.0]])
    assert stiffness(gram, "sign")[0, 1] == -1.0 and stiffness(gram, "cos")[0, 1] == -0.5
    assert list(stiffness_matrices(gram, ["cos"])[0]) == ["cos"]
    with pytest.raises(ValueError, match=r"Received: measure='angle'; expected one of \('sign', 'cos'\)"):
        stiffness(gram, "angle")
    assert check_measures(("cos", "sign")) == ("sign", "cos")
    for bad in [(), ("cos", "cos"), ("cos", "l2")]:
        with pytest.raises(ValueError, match="Received: measures="):
            check_measures(bad)


@pytest.mark.parametrize("measure", ["sign", "cos"])
def test_class_matrix_matches_naive_reference(measure):
    rng = np.random.default_rng(1)
    g = rng.normal(size=(25, 6)) + 0.5
    labels = rng.integers(0, 3, 25)
    s = stiffness(g @ g.T, measure)
    train, val = np.arange(17), np.arange(17, 25)
    for rows, cols, same in [(train, train, True), (train, val, False), (val, val, True)]:
        got, counts = class_stiffness(s[np.ix_(rows, cols)], labels[rows], labels[cols], 3, same)
        ref, ref_counts = naive_class_matrix(g[rows], g[cols], labels[rows], labels[cols], 3, same, measure)
        np.testing.assert_allclose(got, ref, atol=1e-12)
        np.testing.assert_array_equal(counts, ref_counts)
        assert counts.dtype == np.int64
        if same:
            np.testing.assert_allclose(got, got.T, atol=1e-12)


def test_train_val_is_directed_rows_are_the_step_class():
    # train: class 0 = e1, class 1 = e2; val: class 0 = e1, class 1 = e1 + e2
    g_train, g_val = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 1.0]])
    g = np.concatenate([g_train, g_val])
    s, _ = cosine_stiffness(g @ g.T)
    matrix, counts = class_stiffness(s[:2, 2:], [0, 1], [0, 1], 2, same_set=False)
    assert matrix[0, 1] == pytest.approx(np.sqrt(0.5))  # step on train class 0, effect on val class 1
    assert matrix[1, 0] == 0.0
    assert counts.tolist() == [[1, 1], [1, 1]]


def test_single_example_class_gives_nan_diagonal_not_dropped():
    g = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    s, _ = cosine_stiffness(g @ g.T)
    matrix, counts = class_stiffness(s, [0, 0, 1], [0, 0, 1], 3, same_set=True)
    assert matrix.shape == (3, 3) and np.isnan(matrix[1, 1]) and counts[1, 1] == 0
    assert counts[0, 1] == counts[1, 0] == 2 and np.isfinite(matrix[0, 1])
    assert np.isnan(matrix[2]).all() and not counts[2].any()  # class without probes
    within, between = within_between(matrix)
    assert within == pytest.approx(matrix[0, 0]) and between == pytest.approx(matrix[0, 1])


def test_within_between_ignores_nan_and_never_warns():
    assert within_between(np.array([[0.5, -1.0], [0.0, 0.7]])) == pytest.approx((0.6, -0.5))
    within, between = within_between(np.full((2, 2), np.nan))
    assert np.isnan(within) and np.isnan(between)
    within, between = within_between(np.array([[0.3]]))
    assert within == 0.3 and np.isnan(between)


def test_paper_picture_sign_within_plus_one_between_minus_one():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 10)
    g = np.eye(4)[labels] - 0.3 * (1 - np.eye(4)[labels]) + 0.05 * rng.normal(size=(40, 4))
    s = sign_stiffness(g @ g.T)
    within, between = within_between(class_stiffness(s, labels, labels, 4, same_set=True)[0])
    assert within == 1.0 and between == -1.0


def test_pair_set_blocks_any_order():
    blocks = pair_set_blocks(np.array([True, False, True, False]))
    assert list(blocks) == ["train-train", "train-val", "val-val"]
    rows, cols, same = blocks["train-val"]
    assert rows.tolist() == [1, 3] and cols.tolist() == [0, 2] and same is False
    assert list(pair_set_blocks(np.zeros(3, dtype=bool))) == ["train-train"]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: cosine_stiffness(np.ones((2, 3))),
            ValueError,
            r"Received: gram with shape \(2, 3\); expected a square",
        ),
        (lambda: cosine_stiffness([[1.0, np.nan], [np.nan, 1.0]]), ValueError, r"non-finite entry at \(0, 1\)"),
        (lambda: class_stiffness(np.eye(2), [0, 1.0], [0, 1], 2, True), TypeError, "dtype float64; expected integer"),
        (
            lambda: class_stiffness(np.eye(2), [0, 2], [0, 2], 2, True),
            ValueError,
            r"outside \[0, 2\) \(first labels_a\[1\]=2",
        ),
        (
            lambda: class_stiffness(np.eye(2), [0], [0, 1], 2, True),
            ValueError,
            r"labels_a with shape \(1,\); expected \(2,\)",
        ),
        (lambda: class_stiffness(np.eye(2), [0, 1], [1, 0], 2, True), ValueError, "same_set=True with different"),
        (lambda: class_stiffness(np.eye(2), [0, 1], [1, 0], 0, False), ValueError, "Received: n_classes=0"),
        (lambda: within_between(np.ones(3)), ValueError, r"class matrix with shape \(3,\)"),
        (lambda: pair_set_blocks([0, 1]), TypeError, "expected a 1-D boolean"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_math_modules_do_not_import_heavy_packages():
    code = (
        "import sys, keras_stiffness.math.stiffness, keras_stiffness.math.distance, keras_stiffness.math.summarize; "
        "heavy = [m for m in ('tensorflow', 'keras', 'h5py', 'matplotlib') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
