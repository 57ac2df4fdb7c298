"""A streamed measurement equals the whole-matrix one, field by field.

The whole-matrix reference is what a measurement was before blocks: ``summarize`` on the adapter's
whole Gram matrix and representations. The streamed one is ``measure`` with blocks of 1, of sizes that
do not divide N, and of all N; cosine and Euclidean distances; held-out probes; regression targets; a
``FunctionAdapter``; and a MirroredStrategy over 2 logical CPU devices (in a fresh process).
"""

import dataclasses
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_stiffness.data.probes import ProbeSet
from keras_stiffness.math.summarize import summarize
from keras_stiffness.measure.adapters import FunctionAdapter, KerasAdapter
from keras_stiffness.measure.config import MeasureConfig
from keras_stiffness.measure.measuring import measure


def _model(out=3, activation="softmax", seed=0, dtype="float64"):
    """A float64 model by default: its forward pass, like the products, then rounds alike for a block
    of 1 probe and a batch of all (a float32 forward pass may round differently per batch size)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype=dtype),
            keras.layers.Dense(6, activation="relu", name="hidden", dtype=dtype),
            keras.layers.Dense(4, activation="tanh", name="mid", dtype=dtype),
            keras.layers.Dense(out, activation=activation, name="head", dtype=dtype),
        ]
    )
    model.compile(loss="sparse_categorical_crossentropy" if activation == "softmax" else "mse")
    return model


def _probes(targets="classes"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype("float32")
    if targets == "regression":
        y = rng.normal(size=(60, 2)).astype("float32")
        return ProbeSet(x, y, n=11, x_val=x[:20], y_val=y[:20], val_n=6, seed=0, targets="regression")
    y = np.arange(60) % 3
    return ProbeSet(x, y, per_class=4, x_val=x[:30], y_val=y[:30], val_per_class=2, seed=0)


def whole_matrix_measurement(adapter, probes, config):
    gram = adapter.gram(probes.x, probes.targets)
    reps = adapter.representations(probes.x, config.layers) if config.distances else None
    return summarize(
        gram.total,
        gram.per_layer,
        probes.y,
        probes.is_val,
        probes.n_classes,
        reps,
        **config.summary_options(),
    )


def assert_same(a, b, rtol=1e-6, atol=1e-12):
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name in ("gram", "seconds", "wall_time"):
            continue
        if isinstance(x, np.ndarray):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=field.name)
        elif isinstance(x, float):
            assert (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, rel=rtol), field.name
        else:
            assert x == y, field.name


@pytest.mark.parametrize("block_size", [1, 4, 7, None])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_streamed_measurement_equals_whole_matrix(block_size, metric):
    """A float64 model: the two paths differ only in the order of float64 sums."""
    model, probes = _model(), _probes()
    config = MeasureConfig(metric=metric, bins=6, min_count=1)
    expected = whole_matrix_measurement(KerasAdapter(model, precision="float64"), probes, config)
    got, info = measure(KerasAdapter(model, precision="float64"), probes, config, block_size=block_size)
    assert_same(got, expected, rtol=1e-9)
    assert info.plan["block_size"] == (block_size or probes.n)
    np.testing.assert_allclose(info.losses, KerasAdapter(model).gram(probes.x, probes.targets).losses, rtol=1e-6)


def test_float32_products_agree_to_float32_rounding():
    model, probes = _model(dtype="float32"), _probes()
    config = MeasureConfig(bins=6, min_count=1)
    expected = whole_matrix_measurement(KerasAdapter(model), probes, config)
    got, _ = measure(KerasAdapter(model), probes, config, block_size=3)
    assert_same(got, expected, rtol=1e-4, atol=1e-6)


def test_regression_targets_stream_too():
    model, probes = _model(out=2, activation=None), _probes("regression")
    config = MeasureConfig(bins=5, min_count=1)
    expected = whole_matrix_measurement(KerasAdapter(model, precision="float64"), probes, config)
    got, _ = measure(KerasAdapter(model, precision="float64"), probes, config, block_size=3)
    assert_same(got, expected, rtol=1e-9)


def test_function_adapter_streams_blocks():
    w = tf.Variable(np.random.default_rng(1).normal(size=(5, 3)))  # float64 throughout
    b = tf.Variable(np.zeros(3))

    def loss(x, y):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.matmul(tf.cast(x, tf.float64), w) + b)

    adapter = FunctionAdapter(loss, [w, b], groups={"w": [w], "b": [b]})
    probes = _probes()
    config = MeasureConfig(bins=4, min_count=1)
    expected = whole_matrix_measurement(adapter, probes, config)
    got, info = measure(adapter, probes, config, block_size=5)
    assert_same(got, expected, rtol=1e-9)
    assert info.method == "jacobian" and info.plan["blocks"] == -(-probes.n // 5)


def test_memory_budget_sets_the_blocks_and_is_recorded():
    model, probes = _model(), _probes()
    _, info = measure(KerasAdapter(model), probes, MeasureConfig(bins=4), memory_budget="64MiB")
    assert info.plan["memory_budget"] == 64 * 2**20
    assert 1 <= info.plan["block_size"] <= probes.n


def test_progress_reports_every_block():
    model, probes = _model(), _probes()
    seen = []
    measure(
        KerasAdapter(model),
        probes,
        MeasureConfig(distances=False),
        block_size=4,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == list(range(len(seen)))


MIRRORED = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    import numpy as np
    from test_measure_blocks import _model, _probes, assert_same
    from keras_stiffness.measure.adapters import KerasAdapter
    from keras_stiffness.measure.config import MeasureConfig
    from keras_stiffness.measure.measuring import measure

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _model()
    probes = _probes()
    config = MeasureConfig(bins=5, min_count=1)
    single, _ = measure(KerasAdapter(model), probes, config, block_size=4)
    placed = []
    mirrored, info = measure(KerasAdapter(model), probes, config, block_size=4, strategy=strategy)
    assert_same(mirrored, single, rtol=1e-9)
    plan = info.plan
    print(json.dumps({"workers": plan["workers"], "pairs": plan["worker_pairs"], "all": plan["block_pairs"]}))
    """
)


def test_mirrored_strategy_over_two_cpu_devices_gives_the_single_device_result():
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=240, cwd=str(_root())
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"workers": 1, "pairs": report["all"], "all": report["all"]}


def _root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("block_size", [1, 4, 7, None])
def test_saved_gram_is_written_blockwise_and_equals_the_whole_matrix(tmp_path, block_size):
    from keras_stiffness import open_run
    from keras_stiffness.app.analysis import analyze

    model, probes = _model(), _probes()
    whole = KerasAdapter(model).gram(probes.x, probes.targets).total
    path = str(tmp_path / "run.h5")
    m, info, _ = analyze(model, probes, MeasureConfig(save_gram=True, bins=4), block_size=block_size, out=path)
    with open_run(path) as run:
        np.testing.assert_allclose(run.gram(0), whole, rtol=1e-12, atol=1e-15)
        assert run.tags["block_size"].tolist() == [float(block_size or probes.n)]
        assert (
            run.tags["worker_pairs"].tolist() == run.tags["block_pairs"].tolist() == [float(info.plan["block_pairs"])]
        )
    assert m.gram is None  # never held whole


def test_saved_gram_in_float32_and_a_failed_measurement_leaves_the_old_file(tmp_path):
    from keras_stiffness import open_run
    from keras_stiffness.app.analysis import analyze

    model, probes = _model(), _probes()
    whole = KerasAdapter(model).gram(probes.x, probes.targets).total
    path = str(tmp_path / "run.h5")
    config = MeasureConfig(save_gram=True, gram_dtype="float32", bins=4)
    analyze(model, probes, config, block_size=5, out=path)
    with open_run(path) as run:
        np.testing.assert_array_equal(run.gram(0), whole.astype(np.float32).astype(np.float64))
    before = open(path, "rb").read()

    class Boom(RuntimeError):
        pass

    def fail(done, total):
        if done == 3:
            raise Boom("interrupted")

    with pytest.raises(Boom):
        analyze(model, probes, config, block_size=5, out=path, overwrite=True, progress=fail)
    assert open(path, "rb").read() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no partial file left behind
