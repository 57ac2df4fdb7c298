"""Distances, binned curves and critical lengths, against naive loops and hand-made curves."""

import warnings

import numpy as np
import pytest

from keras_stiffness.math import distance
from keras_stiffness.math.distance import (
    binned_curve,
    critical_length,
    critical_length_fit,
    default_edges,
    pairwise_distance,
)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def naive_distance(x, metric):
    x = x.reshape(len(x), -1).astype(np.float64)
    out = np.zeros((len(x), len(x)))
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            if metric == "euclidean":
                out[i, j] = np.linalg.norm(x[i] - x[j])
            else:
                ni, nj = np.linalg.norm(x[i]), np.linalg.norm(x[j])
                out[i, j] = 1.0 if ni == 0 or nj == 0 else 1.0 - x[i] @ x[j] / (ni * nj)
    return out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk", [1 << 22, 7])
def test_pairwise_distance_matches_naive(metric, chunk, monkeypatch):
    monkeypatch.setattr(distance, "CHUNK_VALUES", chunk)  # 7 forces many row chunks
    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 2, 3)).astype(np.float32)
    x[5] = 0.0
    d = pairwise_distance(x, metric)
    np.testing.assert_allclose(d, naive_distance(x, metric), atol=1e-9)
    assert d.dtype == np.float64 and np.array_equal(d, d.T) and not np.diagonal(d).any()
    if metric == "cosine":
        assert d.min() >= 0 and d.max() <= 2 and np.all(np.delete(d[5], 5) == 1.0)


def test_cosine_distance_extremes():
    d = pairwise_distance(np.array([[1.0, 1.0], [2.0, 2.0], [-1.0, -1.0]]))
    assert d[0, 1] == pytest.approx(0.0, abs=1e-15) and d[0, 2] == pytest.approx(2.0)


def test_default_edges():
    np.testing.assert_allclose(default_edges(None, "cosine", 4), [0, 0.5, 1, 1.5, 2])
    d = np.array([[0.0, 2.0, 1.0], [9.0, 0.0, 4.0], [1.0, 4.0, 0.0]])  # 9 sits below the diagonal
    np.testing.assert_allclose(default_edges(d, "euclidean", 2), [0, 2, 4])
    np.testing.assert_allclose(default_edges(np.zeros((3, 3)), "euclidean", 2), [0, 0.5, 1])
    np.testing.assert_allclose(default_edges(np.zeros((1, 1)), "euclidean", 1), [0, 1])


@pytest.mark.parametrize("chunk", [1 << 22, 5])
def test_binned_curve_matches_naive(chunk, monkeypatch):
    monkeypatch.setattr(distance, "CHUNK_VALUES", chunk)
    rng = np.random.default_rng(1)
    n, edges = 15, np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    s = rng.uniform(-1, 1, (n, n))
    d = rng.uniform(0, 2, (n, n))
    d[0, 1], d[0, 2] = 2.0, 0.0  # the last edge goes in the last bin, the first edge in the first
    mask = rng.random((n, n)) < 0.7
    mean, count = binned_curve(s, d, edges, mask)
    total, ref_count = np.zeros(4), np.zeros(4, int)
    for i in range(n):
        for j in range(i + 1, n):
            if mask[i, j]:
                k = min(int(np.searchsorted(edges, d[i, j], side="right")) - 1, 3)
                total[k] += s[i, j]
                ref_count[k] += 1
    np.testing.assert_allclose(mean, total / ref_count)
    np.testing.assert_array_equal(count, ref_count)
    assert count.dtype == np.int64


def test_binned_curve_empty_bins_and_out_of_range_pairs():
    d = np.array([[0.0, 0.1, 5.0], [0.1, 0.0, 0.2], [5.0, 0.2, 0.0]])
    s = np.array([[1.0, 0.4, 0.9], [0.4, 1.0, 0.2], [0.9, 0.2, 1.0]])
    mean, count = binned_curve(s, d, [0.0, 1.0, 2.0])
    assert mean[0] == pytest.approx(0.3) and np.isnan(mean[1]) and count.tolist() == [2, 0]


def test_critical_length_interpolates_between_centres():
    xi = critical_length([0.1, 0.3, 0.5, 0.7], [0.8, 0.4, -0.2, -0.6], [20, 20, 20, 20], 10)
    assert xi == pytest.approx(0.3 + 0.2 * 0.4 / 0.6)
    assert critical_length([0.1, 0.3, 0.5], [0.8, 0.0, -0.5], [20] * 3, 10) == pytest.approx(0.3)


def test_critical_length_skips_sparse_bins():
    centers, mean = [0.1, 0.3, 0.5, 0.7], [0.8, -0.9, 0.4, -0.4]
    assert critical_length(centers, mean, [20, 3, 20, 20], 10) == pytest.approx(0.6)
    assert critical_length(centers, mean, [3, 20, 20, 20], 10) != critical_length(centers, mean, [20] * 4, 10)
    assert critical_length(centers, [np.nan, 0.5, -0.5, 0.1], [0, 20, 20, 20], 10) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "mean, count",
    [
        ([0.8, 0.5, 0.1], [20, 20, 20]),  # never crosses
        ([-0.1, 0.5, -0.5], [20, 20, 20]),  # starts at or below 0: no stiff domain
        ([0.8, 0.5, -0.5], [1, 2, 3]),  # no bin with enough pairs
    ],
)
def test_critical_length_undefined_is_nan(mean, count):
    assert np.isnan(critical_length([0.1, 0.3, 0.5], mean, count, 10))


def test_critical_length_fit_recovers_the_zero_of_a_line():
    rng = np.random.default_rng(2)
    n = 60
    labels = rng.integers(0, 2, n)
    d = rng.uniform(0, 2, (n, n))
    d = np.triu(d, 1) + np.triu(d, 1).T
    s = 0.6 - 0.8 * d + 0.01 * rng.normal(size=(n, n))
    same = labels[:, None] == labels[None, :]
    s[~same] = 0.9  # cross-class pairs must be ignored
    assert critical_length_fit(d, s, same) == pytest.approx(0.75, abs=0.01)


def test_critical_length_fit_undefined_is_nan():
    d = np.array([[0.0, 0.5, 1.0], [0.5, 0.0, 1.5], [1.0, 1.5, 0.0]])
    every = np.ones((3, 3), dtype=bool)
    assert np.isnan(critical_length_fit(d, 0.1 + d, every, min_pairs=2))  # slope not negative
    assert np.isnan(critical_length_fit(d, -0.1 - d, every, min_pairs=2))  # starts below 0
    assert np.isnan(critical_length_fit(d, 1.0 - d, every, min_pairs=4))  # 3 pairs < 4
    assert np.isnan(critical_length_fit(np.ones((3, 3)), 1.0 - d, every, min_pairs=2))  # no spread


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: pairwise_distance(np.ones((3, 2)), "manhattan"), r"Received: metric='manhattan'; expected one of"),
        (lambda: pairwise_distance(np.array([[1.0], [np.inf]])), "Received: R with a non-finite value"),
        (lambda: pairwise_distance(np.float64(1.0)), r"Received: R with shape \(\)"),
        (lambda: default_edges(None, "cosine", 0), "Received: bins=0"),
        (lambda: binned_curve(np.eye(2), np.eye(3), [0, 1]), r"S \(2, 2\) and D \(3, 3\)"),
        (lambda: binned_curve(np.eye(2), np.eye(2), [1, 0]), "strictly increasing"),
        (lambda: binned_curve(np.eye(2), np.eye(2), [0, 1], np.ones((2, 2))), "pair_mask of dtype float64"),
        (lambda: critical_length([0.2, 0.1], [1, -1], [5, 5], 1), "centers not finite and strictly increasing"),
        (lambda: critical_length([0.1], [1, -1], [5, 5], 1), "expected three 1-D arrays"),
        (lambda: critical_length([0.1, 0.2], [1, -1], [5, 5], -1), "Received: min_count=-1"),
        (lambda: critical_length_fit(np.eye(2), np.eye(2), np.eye(2)), r"same_class_mask \(2, 2\) \(float64\)"),
        (lambda: critical_length_fit(np.eye(2), np.eye(2), np.eye(2, dtype=bool), 1), "Received: min_pairs=1"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fitted_critical_length_is_not_extrapolated():
    """A nearly flat within-class line crosses zero far beyond the observed distances: NaN."""
    from keras_stiffness.math.distance import critical_length_fit

    d = np.array([[0.0, 0.2, 0.3], [0.2, 0.0, 0.4], [0.3, 0.4, 0.0]])
    s = 0.5 - 0.01 * d  # zero at d = 50, far beyond 0.4
    assert np.isnan(critical_length_fit(d, s, np.ones((3, 3), dtype=bool), min_pairs=2))
    s = 0.5 - 2.0 * d  # zero at 0.25, inside [0.2, 0.4]
    assert critical_length_fit(d, s, np.ones((3, 3), dtype=bool), min_pairs=2) == pytest.approx(0.25)
