"""keras_stiffness.measure.distribute: worker shares and TensorFlow's collectives, on real process clusters.

The multi-worker tests start real ``MultiWorkerMirroredStrategy`` clusters of two processes on
127.0.0.1 (:mod:`tests.multiworker`); the functions ``worker_*`` below are what those processes run
(``python -c``, importing this module: it imports no TensorFlow at the top, as a worker must create its
strategy before any TensorFlow op). They print one JSON line for the test to read.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from keras_stiffness.data.probes import ProbeSet
from keras_stiffness.measure.distribute import (
    DEFAULT_TIMEOUT_SECONDS,
    all_reduce,
    check_same_probes,
    is_chief,
    replica_devices,
    worker_share,
)
from tests.multiworker import run_workers

HERE = "tests.test_distribute"


# ------------------------------------------------------------------------------------------------
# What each worker contributes
# ------------------------------------------------------------------------------------------------
def contribution(k: int):
    """Worker ``k``'s arrays and ops: float64 sums finer than float32, an int64 count past 2**53, maxima."""
    arrays = {
        "pair_sums": np.array([[1.0 + (k + 1) * 2.0**-40, 1e-300 * (k + 1)], [3.25, -float(k)]]),
        "counts": np.array([5 + k, 2**60 + k, -(2**40)], dtype=np.int64),
        "peak": np.array([0.5 + k, 7.0 - 10 * k, -np.inf]),
        "peak_n": np.array([k, -k], dtype=np.int32),
        "layer_sum": np.float64(0.1 * (k + 1)),  # a 0-d entry
        "half": np.array([0.25 * (k + 1)], dtype=np.float32),
    }
    ops = {"pair_sums": "sum", "counts": "sum", "peak": "max", "peak_n": "max", "layer_sum": "sum", "half": "sum"}
    return arrays, ops


def expected_combination(workers: int):
    parts = [contribution(k)[0] for k in range(workers)]
    ops = contribution(0)[1]
    out = {}
    for name, op in ops.items():
        values = [p[name] for p in parts]
        dtype = np.asarray(values[0]).dtype
        if op == "sum":
            wide = np.float64 if dtype.kind == "f" else np.int64
            total = values[0].astype(wide)
            for v in values[1:]:
                total = total + v.astype(wide)
            out[name] = np.asarray(total).astype(dtype)
        else:
            out[name] = np.max(np.stack(values), axis=0).astype(dtype)
    return out


def _encode(arrays):
    return {
        name: {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.reshape(-1).tolist()}
        for name, a in arrays.items()
    }


def _decode(encoded):
    return {name: np.array(e["values"], dtype=e["dtype"]).reshape(e["shape"]) for name, e in encoded.items()}


# ------------------------------------------------------------------------------------------------
# Worker programs (run in the subprocesses)
# ------------------------------------------------------------------------------------------------
def worker_combine(probe_hash: str, n: str) -> None:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any other TensorFlow op
    k = int(os.environ["KSTIFF_WORKER_INDEX"])
    check_same_probes(strategy, probe_hash, int(n), timeout_seconds=30)
    arrays, ops = contribution(k)
    combined = all_reduce(strategy, arrays, ops, timeout_seconds=30)
    empty = all_reduce(strategy, {}, {}, timeout_seconds=30)
    # Entries that differ between workers: every worker raises the same ValueError (caught here).
    try:
        odd = {"x": np.zeros(3 + k)}
        all_reduce(strategy, odd, {"x": "sum"}, timeout_seconds=30)
        layout_error = None
    except ValueError as exc:
        layout_error = str(exc)
    again = all_reduce(strategy, {"n": np.array([k + 1])}, {"n": "sum"}, timeout_seconds=30)  # still usable
    report = {
        "share": worker_share(strategy),
        "chief": is_chief(strategy),
        "devices": replica_devices(strategy),
        "combined": _encode(combined),
        "empty": empty,
        "layout_error": layout_error,
        "again": again["n"].tolist(),
    }
    print(json.dumps(report), flush=True)


def worker_probes(hashes: str, n: str) -> None:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    k = int(os.environ["KSTIFF_WORKER_INDEX"])
    print(json.dumps({"share": worker_share(strategy), "chief": is_chief(strategy)}), flush=True)
    check_same_probes(strategy, hashes.split(",")[k], int(n), timeout_seconds=30)  # raises: not caught
    print("not reached", flush=True)


def worker_lost() -> None:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if int(os.environ["KSTIFF_WORKER_INDEX"]) == 1:
        os._exit(3)  # worker 1 is lost after the cluster formed
    start = time.monotonic()
    try:
        all_reduce(strategy, {"x": np.ones(2)}, {"x": "sum"}, timeout_seconds=2)
        outcome = "no error"
    except RuntimeError as exc:
        outcome = str(exc)
    print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - start}), flush=True)


MIRRORED_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_stiffness.measure.distribute import all_reduce, is_chief, replica_devices, worker_share
strategy = tf.distribute.MirroredStrategy()
arrays = {"s": np.array([1.0 + 2.0**-40, 2.0]), "c": np.array([7], dtype=np.int64)}
out = all_reduce(strategy, arrays, {"s": "sum", "c": "max"})
local = tf.distribute.MultiWorkerMirroredStrategy()  # no TF_CONFIG: one worker on this machine
print(json.dumps({
    "devices": replica_devices(strategy),
    "replicas": strategy.num_replicas_in_sync,
    "share": worker_share(strategy),
    "chief": is_chief(strategy),
    "same": all(np.array_equal(out[k], arrays[k]) and out[k].dtype == arrays[k].dtype for k in arrays),
    "copies": all(not np.shares_memory(out[k], arrays[k]) for k in arrays),
    "local_share": worker_share(local),
    "local_chief": is_chief(local),
}))
"""


# ------------------------------------------------------------------------------------------------
# Tests: real clusters
# ------------------------------------------------------------------------------------------------
def _report(result):
    assert result.returncode == 0, f"worker {result.index} exited {result.returncode}:\n{result.stderr[-4000:]}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"worker {result.index} printed no report:\n{result.stdout}\n{result.stderr[-4000:]}"
    return json.loads(lines[-1])


def _probes(seed: int) -> ProbeSet:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)).astype("float32"), np.arange(60) % 3
    return ProbeSet(x, y, per_class=4, seed=seed)


def test_two_workers_combine_exactly_with_tensorflow_collectives():
    probes = _probes(0)
    results = run_workers(function=f"{HERE}:worker_combine", args=(probes.hash, len(probes)), workers=2, timeout=50)
    reports = [_report(r) for r in results]
    assert [tuple(r["share"]) for r in reports] == [(0, 2), (1, 2)]
    assert [r["chief"] for r in reports] == [True, False]
    for k, r in enumerate(reports):
        assert r["devices"] == [f"/job:worker/replica:0/task:{k}/device:CPU:0"]
        assert r["empty"] == {}
        assert r["again"] == [3]
        assert r["layout_error"] is not None and "differ between workers" in r["layout_error"], r["layout_error"]
        assert f"this worker ({k} of 2) has 1 arrays, {3 + k} values (x)" in r["layout_error"]
    expected = expected_combination(2)
    first = _decode(reports[0]["combined"])
    assert list(first) == list(contribution(0)[0])  # the caller's order
    for name, want in expected.items():
        for r in reports:  # both workers, identical to the bit
            got = _decode(r["combined"])[name]
            assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
            np.testing.assert_array_equal(got, want, err_msg=name)
    # The float64 sums and the int64 count are beyond float32 (and float64 for the count): exact anyway.
    assert first["pair_sums"][0, 0] == 2.0 + 3 * 2.0**-40 != float(np.float32(2.0 + 3 * 2.0**-40))
    assert first["counts"][1] == 2**61 + 1
    assert first["peak"].tolist() == [1.5, 7.0, -np.inf] and first["peak_n"].tolist() == [1, 0]


def test_a_probe_set_mismatch_fails_on_every_worker_with_the_hashes():
    hashes = [_probes(0).hash, _probes(1).hash]
    assert hashes[0] != hashes[1]
    results = run_workers(
        function=f"{HERE}:worker_probes", args=(",".join(hashes), 12), workers=2, timeout=50, chief=True
    )
    for k, result in enumerate(results):
        first = json.loads(result.stdout.splitlines()[0])
        assert tuple(first["share"]) == (k, 2) and first["chief"] == (k == 0)  # chief = index 0, then worker 0
        assert result.returncode != 0 and "not reached" not in result.stdout
        message = result.stderr
        assert "ValueError: Received: probe sets whose hashes differ between workers" in message, message[-3000:]
        assert f"this worker ({k} of 2) has hash {hashes[k]} and N=12" in message
        assert f"worker {1 - k}: hash {hashes[1 - k][:15]}..., N=12" in message
        assert "same seed" in message and "Expected the same probe set on every worker" in message


def test_a_lost_worker_ends_the_collective_in_time_with_a_clear_error():
    results = run_workers(function=f"{HERE}:worker_lost", workers=2, timeout=50)
    assert results[1].returncode == 3
    report = _report(results[0])
    assert report["seconds"] < 20
    assert "Received: " in report["outcome"] and "across 2 workers" in report["outcome"], report["outcome"]
    assert "restart every worker" in report["outcome"]


def test_mirrored_strategy_over_two_logical_cpus_places_but_does_not_reduce():
    [result] = run_workers(MIRRORED_SCRIPT, workers=1, cluster=False, timeout=50)
    report = _report(result)
    assert report["devices"] == [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(2)]
    assert report["replicas"] == 2
    assert tuple(report["share"]) == (0, 1) and report["chief"] is True
    assert report["same"] and report["copies"]
    assert tuple(report["local_share"]) == (0, 1) and report["local_chief"] is True


# ------------------------------------------------------------------------------------------------
# Tests: one process
# ------------------------------------------------------------------------------------------------
def test_no_strategy_is_one_worker_and_returns_copies_without_tensorflow():
    assert worker_share() == (0, 1) and is_chief() and replica_devices() == []
    arrays, ops = contribution(0)
    out = all_reduce(None, arrays, ops)
    assert list(out) == list(arrays)
    for name, value in arrays.items():
        value = np.asarray(value)
        assert out[name].dtype == value.dtype and out[name].shape == value.shape
        np.testing.assert_array_equal(out[name], value)
        assert not np.shares_memory(out[name], value)
    probes = _probes(0)
    check_same_probes(None, probes.hash, len(probes))
    assert DEFAULT_TIMEOUT_SECONDS > 0


def test_single_process_strategies_are_one_worker():
    import tensorflow as tf

    default = tf.distribute.get_strategy()
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert worker_share(default) == worker_share(one) == (0, 1)
    assert is_chief(default) and is_chief(one)
    assert replica_devices(default) == []
    assert replica_devices(one) == ["/job:localhost/replica:0/task:0/device:CPU:0"]
    out = all_reduce(one, {"a": np.arange(3)}, {"a": "max"})
    np.testing.assert_array_equal(out["a"], np.arange(3))


@pytest.mark.parametrize(
    "arrays, ops, error, text",
    [
        ({"a": np.ones(2)}, {"a": "mean"}, ValueError, "ops['a']='mean'; expected one of 'sum', 'max'"),
        ({"a": np.ones(2)}, {"b": "sum"}, ValueError, "arrays without an op ['a'] and ops without an array ['b']"),
        ({"a": np.ones(2, bool)}, {"a": "sum"}, TypeError, "arrays['a'] of dtype bool; expected a NumPy float"),
        ({"a": np.ones(2, np.uint64)}, {"a": "sum"}, TypeError, "of dtype uint64"),
        ({"a": np.ones(2, complex)}, {"a": "sum"}, TypeError, "of dtype complex128"),
        ({1: np.ones(2)}, {1: "sum"}, TypeError, "array names [1]; expected strings"),
        ([np.ones(2)], {}, TypeError, "arrays of type list and ops of type dict"),
    ],
)
def test_all_reduce_refuses_bad_entries(arrays, ops, error, text):
    with pytest.raises(error) as info:
        all_reduce(None, arrays, ops)
    assert text in str(info.value)


def test_bad_arguments_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"timeout_seconds=-1; expected a positive number"):
        all_reduce(None, {}, {}, timeout_seconds=-1)
    with pytest.raises(TypeError, match=r"strategy='mirrored' of type str; expected None or a tf.distribute"):
        worker_share("mirrored")
    with pytest.raises(ValueError, match=r"probe_hash='not hex'; expected a hexadecimal digest"):
        check_same_probes(None, "not hex", 10)
    with pytest.raises(TypeError, match=r"probe_hash=123 of type int"):
        check_same_probes(None, 123, 10)
    with pytest.raises(ValueError, match=r"n=0; expected a positive integer. Pass len\(probes\)."):
        check_same_probes(None, "ab12", 0)
    assert all_reduce(None, {}, {}, timeout_seconds=None) == {}
