"""StreamingSummary against summarize() on whole matrices: every Measurement field, any block layout."""

import dataclasses
import warnings

import numpy as np
import pytest

from keras_stiffness.math.distance import (
    block_distance,
    block_max_distance,
    default_edges,
    distance_edges_from_max,
    pairwise_distance,
    squared_norms,
)
from keras_stiffness.math.record import Measurement
from keras_stiffness.math.stiffness import stiffness_matrices
from keras_stiffness.math.streaming import StreamingSummary, block_stiffness, gram_inverse_norms
from keras_stiffness.math.summarize import summarize

N = 37
BINS, MIN_COUNT = 6, 3
TAGS = {"step": 7, "epoch": 1.5, "learning_rate": 1e-3}


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def make_case(n_classes=5, val=True, seed=0):
    """Gradients of three layers (one all zero) and two spaces driven by one class-structured latent.

    Classes: ``n_classes - 2`` populated ones, one class with a single probe, the last one absent. One
    probe has an all-zero gradient, one an all-zero representation in the second space.
    """
    rng = np.random.default_rng(seed)
    c = max(n_classes, 3)
    labels = rng.integers(0, c - 2, N)
    labels[5] = c - 2
    is_val = (rng.random(N) < 0.35) if val else np.zeros(N, bool)
    centers = np.eye(c) - 1.0 / c  # anti-correlated class directions: negative between-class stiffness
    z = centers[labels] @ rng.normal(size=(c, 6)) + 1.2 * rng.normal(size=(N, 6))
    grads = {
        "dense": z @ rng.normal(size=(6, 6)) + 0.3 * rng.normal(size=(N, 6)),
        "frozen_like": np.zeros((N, 3)),  # a layer whose Gram is all zero: every probe zero-norm there
        "head": z @ rng.normal(size=(6, 4)) + 0.3 * rng.normal(size=(N, 4)),
    }
    for g in grads.values():
        g[11] = 0.0  # a probe with an all-zero gradient
    per_layer = {}
    for name, g in grads.items():
        gram = g @ g.T
        per_layer[name] = (gram + gram.T) / 2  # exactly symmetric, as the engine's Gram is
    total = sum(per_layer.values())
    reps = {"input": z.reshape(N, 3, 2), "dense": np.maximum(z @ rng.normal(size=(6, 5)), 0.0)}
    reps["dense"][3] = 0.0  # a zero representation vector: cosine distance 1
    if not n_classes:
        labels = rng.integers(0, 100, N)  # ignored without classes
    return {"total": total, "per_layer": per_layer, "labels": labels, "is_val": is_val, "n_classes": n_classes,
            "reps": reps}  # fmt: skip


def reference(case, **kwargs):
    return summarize(
        case["total"],
        case["per_layer"],
        case["labels"],
        case["is_val"],
        case["n_classes"],
        case["reps"],
        bins=BINS,
        min_count=MIN_COUNT,
        tags=TAGS,
        **kwargs,
    )


def upper_blocks(bounds):
    spans = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return [(r, c) for i, r in enumerate(spans) for c in spans[i:]]


def bounds_of(size):
    return list(range(0, N, size)) + [N]


def whole_distances(case, metric):
    """Space -> (N, N) distances whose train-train entries are exactly those summarize computes."""
    train = np.flatnonzero(~case["is_val"])
    out = {}
    for space, x in case["reps"].items():
        d = pairwise_distance(x, metric)
        d[np.ix_(train, train)] = pairwise_distance(x[train], metric)
        out[space] = d
    return out


def stream(case, bounds, *, metric="cosine", shares=1, shuffle=None, distances=None, measures=("sign", "cos")):
    """Stream the blocks of ``bounds`` into ``shares`` accumulators; all-reduce their states when several."""
    blocks = upper_blocks(bounds)
    if shuffle is not None:
        np.random.default_rng(shuffle).shuffle(blocks)
    dist = whole_distances(case, metric) if distances is None else distances
    train = ~case["is_val"]
    edges = None
    if metric == "euclidean":  # the first pass: the largest train-train distance, blockwise
        edges = {
            space: distance_edges_from_max(
                max(block_max_distance(d[r, c], diagonal=r == c, row_mask=train[r], col_mask=train[c])
                    for r, c in blocks),
                metric,
                BINS,
            )
            for space, d in dist.items()
        }  # fmt: skip
    accs = [
        StreamingSummary(
            case["labels"],
            case["is_val"],
            case["n_classes"],
            np.diagonal(case["total"]),
            {name: np.diagonal(g) for name, g in case["per_layer"].items()},
            spaces=tuple(case["reps"]),
            edges=edges,
            measures=measures,
            metric=metric,
            bins=BINS,
            min_count=MIN_COUNT,
        )
        for _ in range(shares)
    ]
    for b, (r, c) in enumerate(blocks):
        accs[b % shares].add(
            r,
            c,
            case["total"][r, c],
            {name: g[r, c] for name, g in case["per_layer"].items()},
            {space: d[r, c] for space, d in dist.items()},
        )
    if shares > 1:  # what an all-reduce does: entry by entry, sum or max
        states = [acc.state() for acc in accs]
        ops = {"sum": np.add, "max": np.maximum}
        combined = {
            key: ops[op].reduce(np.stack([s[key] for s in states])) for key, op in StreamingSummary.REDUCE_OPS.items()
        }
        for acc in accs:
            acc.load_state(combined)
    return [acc.result(tags=TAGS) for acc in accs]


def assert_same(got: Measurement, want: Measurement, rtol=1e-9):
    for field in dataclasses.fields(Measurement):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype, field.name
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=field.name)
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=field.name)
        elif isinstance(b, float):
            assert type(a) is float and (a == b or (np.isnan(a) and np.isnan(b))), field.name
        else:
            assert type(a) is type(b) and a == b, field.name


@pytest.fixture(scope="module")
def case():
    return make_case()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_case_exercises_every_field(case, metric):
    """The comparison is meaningful: NaN and finite values in the tables, curves that cross zero, a fit."""
    ref = reference(case, metric=metric)
    assert ref.pair_sets == ("train-train", "train-val", "val-val") and ref.zero_grad == 1
    assert np.isnan(ref.class_matrix).any() and np.isfinite(ref.class_matrix).any()
    assert np.isfinite(ref.critical_length).any() and np.isfinite(ref.critical_length_fit).any()
    assert (ref.curve_count > 0).sum() > BINS // 2
    assert np.isfinite(ref.layer_mean).all()  # the all-zero layer: stiffness 0 everywhere, mean 0
    assert np.all(ref.layer_mean[1] == 0.0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(
    "bounds", [bounds_of(1), bounds_of(7), bounds_of(N), [0, 2, 3, 15, 16, 30, N]], ids=["1", "7", "whole", "uneven"]
)
def test_streaming_equals_summarize(case, metric, bounds):
    (got,) = stream(case, bounds, metric=metric, shuffle=len(bounds))
    assert_same(got, reference(case, metric=metric))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_split_states_combine_to_the_single_result(case, metric):
    results = stream(case, bounds_of(5), metric=metric, shares=3, shuffle=1)
    want = reference(case, metric=metric)
    for got in results:
        assert_same(got, want)


def test_merge_state_adds_disjoint_shares(case):
    one, two = (StreamingSummary(case["labels"], case["is_val"], 5, np.diagonal(case["total"])) for _ in range(2))
    for b, (r, c) in enumerate(upper_blocks(bounds_of(9))):
        (one, two)[b % 2].add(r, c, case["total"][r, c])
    with pytest.raises(ValueError, match="Received: blocks covering"):
        one.result()
    one.merge_state(two.state())
    assert_same(one.result(tags=TAGS), summarize(case["total"], None, case["labels"], case["is_val"], 5, tags=TAGS))


@pytest.mark.parametrize("val", [True, False])
def test_regression_without_classes(val):
    case = make_case(n_classes=0, val=val, seed=3)
    (got,) = stream(case, bounds_of(6), shuffle=0)
    want = reference(case)
    assert want.class_matrix.shape[-1] == 0 and np.isnan(want.within).all()
    assert_same(got, want)


def test_probe_set_without_val_probes():
    case = make_case(val=False, seed=4)
    (got,) = stream(case, [0, 10, 11, N], shuffle=2)
    assert got.pair_sets == ("train-train",)
    assert_same(got, reference(case))


def test_one_measure_and_no_layers_or_spaces(case):
    acc = StreamingSummary(case["labels"], case["is_val"], 5, np.diagonal(case["total"]), measures=("cos",))
    for r, c in upper_blocks(bounds_of(8)):
        acc.add(r, c, case["total"][r, c])
    want = summarize(case["total"], None, case["labels"], case["is_val"], 5, measures=("cos",), tags=TAGS)
    assert_same(acc.result(tags=TAGS), want)


def test_engine_workflow_with_block_distances(case):
    """Distances from block_distance (the zero-vector threshold from the train probes' norms): equal curves."""
    train = np.flatnonzero(~case["is_val"])
    bounds = bounds_of(10)
    for metric in ("cosine", "euclidean"):
        dist = {}
        for space, x in case["reps"].items():
            sq_max = float(squared_norms(x[train]).max())
            d = np.full((N, N), np.nan)  # only the upper block triangle is ever computed
            for r, c in upper_blocks(bounds):
                d[r, c] = block_distance(x[r], None if r == c else x[c], metric, sq_max=sq_max)
            dist[space] = d
        (got,) = stream(case, bounds, metric=metric, distances=dist)
        assert_same(got, reference(case, metric=metric), rtol=1e-7)


def test_block_helpers_match_the_whole_matrix_functions(case):
    x = case["reps"]["dense"]
    for metric in ("cosine", "euclidean"):
        whole = pairwise_distance(x, metric)
        np.testing.assert_allclose(block_distance(x[:9], x[9:], metric), whole[:9, 9:], atol=1e-12)
        diag = block_distance(x[4:20], None, metric)
        assert np.array_equal(diag, diag.T) and not np.diagonal(diag).any()
        np.testing.assert_allclose(diag, whole[4:20, 4:20], atol=1e-12)
        hi = max(block_max_distance(whole[r, c], diagonal=r == c) for r, c in upper_blocks(bounds_of(6)))
        np.testing.assert_array_equal(distance_edges_from_max(hi, metric, 4), default_edges(whole, metric, 4))
    gram = case["per_layer"]["dense"]
    inv = gram_inverse_norms(np.diagonal(gram))
    mats, zero = stiffness_matrices(gram)
    assert np.array_equal(inv == 0, zero)
    blocks = block_stiffness(gram[:10, 10:], inv[:10], inv[10:])
    for measure, s in blocks.items():
        assert np.array_equal(s, mats[measure][:10, 10:])


def test_incomplete_or_repeated_coverage_raises(case):
    acc = StreamingSummary(case["labels"], case["is_val"], 5, np.diagonal(case["total"]))
    blocks = upper_blocks(bounds_of(10))
    for r, c in blocks[:-1]:
        acc.add(r, c, case["total"][r, c])
    with pytest.raises(ValueError, match=r"Received: blocks covering \d+ of the 703 entries .* fix: add the missing"):
        acc.result()
    r, c = blocks[0]
    with pytest.raises(ValueError, match="overlapping blocks already added"):
        acc.add(r, c, case["total"][r, c])
    with pytest.raises(ValueError, match="overlapping blocks already added"):
        acc.add(slice(0, 5), slice(0, 5), case["total"][:5, :5])  # inside a diagonal block already added
    r, c = blocks[-1]
    acc.add(r, c, case["total"][r, c])
    acc.result()
    state = acc.state()
    state["pairs_seen_by_row"] = 2 * state["pairs_seen_by_row"]  # e.g. a block counted by two workers
    state["pairs_seen_by_col"] = 2 * state["pairs_seen_by_col"]
    acc.load_state(state)
    with pytest.raises(ValueError, match=r"\(row 0: 74 of its 37\); expected every block"):
        acc.result()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"norms": np.ones((N, 2))}, r"Received: norms with shape \(37, 2\)"),
        ({"is_val": np.zeros(N - 1, bool)}, r"Received: is_val with shape \(36,\); expected \(37,\)"),
        ({"metric": "euclidean", "spaces": ("input",)}, r"missing: \['input'\].*distance_edges_from_max"),
        ({"spaces": ("input",), "edges": {"input": [0.0, 1.0]}}, r"edges\['input'\] with 2 values; expected bins"),
        ({"spaces": ("input",), "edges": {"other": [0.0, 1.0]}}, r"unknown: \['other'\]"),
        ({"spaces": ("a", "a")}, "expected distinct names"),
        ({"layer_norms": {"dense": np.ones(3)}}, r"layer_norms\['dense'\] with shape \(3,\)"),
        ({"bins": 0}, "Received: bins=0"),
    ],
)
def test_constructor_errors(case, kwargs, match):
    args = {"labels": case["labels"], "is_val": case["is_val"], "n_classes": 5, "norms": np.ones(N)}
    with pytest.raises(ValueError, match=match):
        StreamingSummary(**{**args, **kwargs})


def test_add_errors_leave_the_state_unchanged(case):
    acc = StreamingSummary(
        case["labels"], case["is_val"], 5, np.ones(N), {"dense": np.ones(N)}, spaces=("input",), bins=BINS
    )
    g, before = case["total"], acc.state()
    bad_calls = [
        ((slice(5, 10), slice(0, 5), g[5:10, :5]), "expected a block of the upper block triangle"),
        ((slice(0, 6), slice(3, 9), g[:6, 3:9]), "expected a block of the upper block triangle"),
        ((slice(0, 40), slice(0, 40), g), r"Received: rows=slice\(0, 40, None\)"),
        ((slice(0, 5), slice(0, 5), g[:5, :4]), r"total with shape \(5, 4\) for the block rows=0:5, cols=0:5"),
        ((slice(0, 2), slice(0, 2), [[1.0, np.nan], [0.0, 1.0]]), r"non-finite entry at \(0, 1\)"),
        ((slice(0, 2), slice(0, 2), g[:2, :2], None), r"per_layer for \[\]; expected one block for each of"),
        ((slice(0, 2), slice(0, 2), g[:2, :2], {"dense": g[:2, :2]}), r"distances for \[\]; expected"),
    ]
    for call, match in bad_calls:
        with pytest.raises(ValueError, match=match):
            acc.add(*call)
    after = acc.state()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match=r"Received: state\['curve_sums'\] with shape \(2, 2, 6\)"):
        acc.load_state({**after, "curve_sums": np.zeros((2, 2, BINS))})
    with pytest.raises(ValueError, match="Received: a state with keys"):
        acc.merge_state({"class_sums": after["class_sums"]})
    with pytest.raises(ValueError, match=r"Received: state\['fit_counts'\] with shape \(1,\) and dtype float64"):
        acc.load_state({**after, "fit_counts": np.zeros(1)})


def test_result_takes_the_tags_of_summarize(case):
    acc = StreamingSummary(case["labels"], case["is_val"], 5, np.diagonal(case["total"]))
    acc.add(slice(0, N), slice(0, N), case["total"])
    assert acc.result().step == 0 and np.isnan(acc.result().epoch)
    with pytest.raises(ValueError, match=r"Received: tags with unknown keys \['lr'\]"):
        acc.result(tags={"lr": 0.1})
