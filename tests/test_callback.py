"""StiffnessCallback during model.fit: rows and tags, agreement with the engine, logs, schedules,
resume, failure policy, bad input, and that training itself is unchanged."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_stiffness import ProbeSet, StiffnessCallback, open_run
from keras_stiffness.engine.api import gradient_gram
from keras_stiffness.math.summarize import summarize

N_CLASSES = 4


def make_data(n=240, d=12, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(N_CLASSES, d))
    y = np.arange(n) % N_CLASSES
    x = (means[y] + 0.8 * rng.normal(size=(n, d))).astype("float32")
    return x, y


def make_model(d=12, seed=0, bn=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((d,)), keras.layers.Dense(16, activation="relu")]
    if bn:
        layers += [keras.layers.BatchNormalization(), keras.layers.Dropout(0.3)]
    layers += [keras.layers.Dense(N_CLASSES, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def data():
    x, y = make_data()
    xv, yv = make_data(80, seed=1)
    probes = ProbeSet(x, y, per_class=6, x_val=xv, y_val=yv, val_per_class=4, seed=0)
    return x, y, xv, yv, probes


class WeightRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_begin(self, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_rows_tags_and_agreement_with_engine(tmp_path, data):
    x, y, xv, yv, probes = data
    model = make_model()
    path = tmp_path / "run.h5"
    cb = StiffnessCallback(probes, str(path), bins=8, min_count=2)
    rec = WeightRecorder()
    hist = model.fit(x, y, validation_data=(xv, yv), epochs=3, batch_size=32, verbose=0, callbacks=[cb, rec])
    steps_per_epoch = int(np.ceil(len(x) / 32))
    with open_run(str(path)) as run:
        assert len(run) == 4
        tags = run.tags
        np.testing.assert_array_equal(tags["step"], [0, steps_per_epoch, 2 * steps_per_epoch, 3 * steps_per_epoch])
        np.testing.assert_array_equal(tags["epoch"], [0, 1, 2, 3])
        np.testing.assert_allclose(tags["train_loss"][1:], hist.history["loss"], rtol=1e-6)
        np.testing.assert_allclose(tags["val_loss"][1:], hist.history["val_loss"], rtol=1e-6)
        assert np.isnan(tags["val_loss"][0])
        np.testing.assert_allclose(tags["learning_rate"], 1e-2, rtol=1e-6)
        assert np.all(np.diff(tags["wall_time"]) >= 0)
        assert run.pair_sets == ("train-train", "train-val", "val-val")
        stored = [run.measurement(i) for i in range(len(run))]
    saved = model.get_weights()
    try:
        for m, weights in zip(stored, rec.weights):
            model.set_weights(weights)
            g = gradient_gram(model, probes.x, probes.y)
            expect = summarize(g.total, g.per_layer, probes.y, probes.is_val, probes.n_classes)
            np.testing.assert_allclose(m.class_matrix, expect.class_matrix, rtol=1e-6, atol=1e-9)
            np.testing.assert_array_equal(m.class_pairs, expect.class_pairs)
    finally:
        model.set_weights(saved)


def test_history_and_early_stopping_see_the_scalars(data):
    x, y, xv, yv, probes = data
    model = make_model()
    cb = StiffnessCallback(probes, distances=False)
    stop = keras.callbacks.EarlyStopping(
        monitor="stiffness_train_val_within_cos", mode="max", patience=0, min_delta=10.0
    )
    hist = model.fit(x, y, epochs=10, batch_size=32, verbose=0, callbacks=[cb, stop])
    assert len(hist.history["loss"]) == 2  # stopped: no 'improvement' of at least 10 is possible
    for key in (
        "stiffness_within_cos",
        "stiffness_between_sign",
        "stiffness_train_val_within_cos",
        "stiffness_val_val_between_cos",
    ):
        assert key in hist.history and len(hist.history[key]) == 2
        assert all(-1 <= v <= 1 for v in hist.history[key])


def test_training_is_unchanged_by_the_callback(data):
    x, y, xv, yv, probes = data
    runs = []
    for use in (False, True):
        model = make_model(bn=True)
        cbs = [StiffnessCallback(probes, every_n_steps=3)] if use else []
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False, callbacks=cbs)
        runs.append((model.get_weights(), [np.asarray(v) for v in model.optimizer.variables]))
    for a, b in zip(runs[0][0], runs[1][0]):  # weights and BatchNormalization statistics
        np.testing.assert_array_equal(a, b)
    for a, b in zip(runs[0][1], runs[1][1]):  # optimizer state, iterations included
        np.testing.assert_array_equal(a, b)


def test_log_schedule_uses_batch_hooks_only_when_asked(data):
    x, y, _, _, probes = data
    plain = StiffnessCallback(probes)
    assert "on_train_batch_end" not in plain.__dict__
    model = make_model()
    cb = StiffnessCallback(probes, schedule="log", distances=False)
    assert "on_train_batch_end" in cb.__dict__
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    steps = [m.step for m in cb.measurements]
    assert steps == [0, 1, 2, 3, 5, 7, 10, 15]  # 16 steps: log-spaced only, no epoch rows
    epochs = [m.epoch for m in cb.measurements]
    assert epochs[1] == pytest.approx(1 / 8) and epochs[-1] == pytest.approx(15 / 8)


def test_resume_appends_and_checks_the_probes(tmp_path, data):
    x, y, xv, yv, probes = data
    path = str(tmp_path / "run.h5")
    model = make_model()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[StiffnessCallback(probes, path, distances=False)])
    with open_run(path) as run:
        first = run.tags["step"].tolist()
    assert first == [0, 8, 16]
    # A different probe set is refused at fit start and the file is left as it was.
    other = ProbeSet(x, y, per_class=5, seed=3)
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match="(?i)probe"):
        model.fit(
            x,
            y,
            epochs=3,
            initial_epoch=2,
            batch_size=32,
            verbose=0,
            callbacks=[StiffnessCallback(other, path, resume=True, distances=False)],
        )
    assert open(path, "rb").read() == before
    assert int(model.optimizer.iterations) == 16
    model.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        batch_size=32,
        verbose=0,
        callbacks=[StiffnessCallback(probes, path, resume=True, distances=False)],
    )
    with open_run(path) as run:
        assert run.tags["step"].tolist() == [0, 8, 16, 24, 32]
        np.testing.assert_array_equal(run.tags["epoch"], [0, 1, 2, 3, 4])


def test_existing_file_and_bad_paths_fail_at_construction(tmp_path, data):
    probes = data[4]
    path = tmp_path / "exists.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        StiffnessCallback(probes, str(path))
    assert path.read_bytes() == b"precious"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StiffnessCallback(probes, str(tmp_path / "missing" / "run.h5"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        StiffnessCallback(probes, str(blocker / "run.h5"))
    with pytest.raises(TypeError, match="ProbeSet"):
        StiffnessCallback((np.zeros((4, 12)), np.zeros(4)))
    with pytest.raises(ValueError, match="on_error"):
        StiffnessCallback(probes, on_error="ignore")
    with pytest.raises(ValueError, match="schedule"):
        StiffnessCallback(probes, schedule="linear")
    with pytest.raises(ValueError, match="every_n_epochs"):
        StiffnessCallback(probes, every_n_epochs=0)


def test_probes_that_do_not_fit_the_model_fail_at_fit_start(tmp_path, data):
    x, y, _, _, _ = data
    model = make_model()
    wrong_shape = ProbeSet(np.zeros((20, 5), "float32") + np.arange(20)[:, None], np.arange(20) % 4, per_class=3)
    with pytest.raises(ValueError, match=r"but the probe set gives \(5\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[StiffnessCallback(wrong_shape, str(tmp_path / "a.h5"))])
    too_many = ProbeSet(x[:60], np.arange(60) % 6, per_class=3)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[StiffnessCallback(too_many, str(tmp_path / "b.h5"))])
    assert int(model.optimizer.iterations) == 0  # nothing was trained
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()
    bad = x[:24].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ProbeSet(bad, y[:24], per_class=2)


def test_on_error_policy(data):
    x, y, _, _, probes = data
    model = make_model()
    cb = StiffnessCallback(probes, distances=False, on_error="warn")
    calls = {"n": 0}

    class Flaky(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            real = cb._adapter.gram_blocks

            def gram(xp, yp, **blocking):
                calls["n"] += 1
                if calls["n"] == 1:
                    raise RuntimeError("boom")
                return real(xp, yp, **blocking)

            cb._adapter.gram_blocks = gram

    # Flaky patches the adapter once the callback has built it (callbacks run in order).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb, Flaky()])
    messages = [str(w.message) for w in caught if "StiffnessCallback" in str(w.message)]
    assert len(messages) == 1 and "step 8" in messages[0] and "boom" in messages[0]
    assert [m.step for m in cb.measurements] == [0, 16]

    model = make_model()
    cb = StiffnessCallback(probes, distances=False, on_error="raise")
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb, Flaky()])


def test_tensorboard_output(tmp_path, data):
    import tensorflow as tf

    x, y, _, _, probes = data
    model = make_model()
    logdir = tmp_path / "tb"
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=32,
        verbose=0,
        callbacks=[StiffnessCallback(probes, tensorboard_dir=str(logdir), distances=False)],
    )
    tags = set()
    for event_file in logdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                tags.add(value.tag)
    assert {
        "stiffness_within_cos",
        "stiffness_train_val_between_sign",
        "stiffness_class_matrix_sign",
        "stiffness_pairwise_cos",
    } <= tags


def test_only_the_chief_writes_under_multi_worker_training(tmp_path, data, monkeypatch):
    """A worker that is not the chief (TF_CONFIG task) measures but never writes the run file."""
    import json

    x, y, _, _, probes = data
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}),
    )
    model = make_model()
    cb = StiffnessCallback(probes, str(tmp_path / "worker1.h5"), distances=False)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    assert len(cb.measurements) == 2 and not (tmp_path / "worker1.h5").exists()
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}),
    )
    cb = StiffnessCallback(probes, str(tmp_path / "worker0.h5"), distances=False)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    with open_run(str(tmp_path / "worker0.h5")) as run:
        assert len(run) == 2


def test_works_under_a_mirrored_strategy(tmp_path, data):
    import tensorflow as tf

    x, y, _, _, probes = data
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = make_model()
    cb = StiffnessCallback(probes, str(tmp_path / "mirrored.h5"), distances=False)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    with open_run(str(tmp_path / "mirrored.h5")) as run:
        assert len(run) == 2 and np.isfinite(run.series("within")).all()


def test_callback_measures_through_a_function_adapter(tmp_path, data):
    """Any StiffnessAdapter can be measured: here a FunctionAdapter over the model's own weights, so
    every row must agree with the structured engine on the Keras model at the same weights."""
    import tensorflow as tf

    from keras_stiffness import FunctionAdapter

    x, y, xv, yv, probes = data
    model = make_model()
    layers = [layer for layer in model.layers if layer.trainable_variables]

    def per_example_loss(xb, yb):
        return keras.losses.sparse_categorical_crossentropy(tf.convert_to_tensor(yb), model(xb, training=False))

    adapter = FunctionAdapter(
        per_example_loss,
        model.trainable_variables,
        groups={layer.name: list(layer.trainable_variables) for layer in layers},
        name="fn",
    )
    path = tmp_path / "fn.h5"
    cb = StiffnessCallback(probes, path, adapter=adapter, distances=False)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    assert len(cb.measurements) == 3
    expected = summarize(
        gradient_gram(model, probes.x, probes.y).total,
        {},
        probes.y,
        probes.is_val,
        probes.n_classes,
        None,
        measures=("sign", "cos"),
    )
    np.testing.assert_allclose(cb.measurements[-1].class_matrix, expected.class_matrix, atol=1e-5)
    with open_run(path) as run:
        assert len(run) == 3
        assert run.config["method"] == "jacobian" and run.config["model"]["class"] == "FunctionAdapter"
        assert tuple(run.layers) == tuple(layer.name for layer in layers)


def test_adapter_argument_is_checked(data):
    from keras_stiffness import FunctionAdapter

    probes = data[-1]
    with pytest.raises(TypeError, match="expected a StiffnessAdapter"):
        StiffnessCallback(probes, None, adapter=object())
    fn = FunctionAdapter(lambda xb, yb: xb[:, 0], [keras.Variable(1.0)])
    with pytest.raises(ValueError, match="together with adapter=FunctionAdapter"):
        StiffnessCallback(probes, None, adapter=fn, loss="mse")


def test_one_hot_labels_with_categorical_crossentropy(tmp_path, data):
    """The most common Keras tutorial setup: to_categorical labels and categorical_crossentropy. The loss
    sees the one-hot rows; the class matrices group by their argmax; the run file records the kind."""
    x, y, xv, yv, _ = data
    onehot, onehot_val = keras.utils.to_categorical(y, N_CLASSES), keras.utils.to_categorical(yv, N_CLASSES)
    probes = ProbeSet(x, onehot, per_class=6, x_val=xv, y_val=onehot_val, val_per_class=4, seed=0)
    assert probes.label_kind == "one-hot" and probes.targets.shape == (len(probes), N_CLASSES)
    model = make_model()
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    cb = StiffnessCallback(probes, tmp_path / "onehot.h5", distances=False)
    model.fit(x, onehot, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    expected = summarize(
        gradient_gram(model, probes.x, probes.targets).total,
        {},
        probes.y,
        probes.is_val,
        probes.n_classes,
        None,
        measures=("sign", "cos"),
    )
    np.testing.assert_allclose(cb.measurements[-1].class_matrix, expected.class_matrix, atol=1e-5)
    with open_run(tmp_path / "onehot.h5") as run:
        assert run.config["probes"]["labels"] == "one-hot"
