"""train.py and models.py: names, schedule, settings, and the paper's first findings on digits."""

import json
import math

import numpy as np
import pytest

from keras_stiffness.app import train
from keras_stiffness.app.models import build_model, paper_cnn, paper_mlp


def test_paper_architectures():
    mlp = paper_mlp((8, 8, 1), 10)
    assert [layer.units for layer in mlp.layers[1:]] == [500, 300, 100, 10]
    assert mlp.layers[-1].activation.__name__ == "softmax"
    cnn = paper_cnn((8, 8, 1), 10)
    convs = [layer for layer in cnn.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [16, 32, 32] and all(c.kernel_size == (3, 3) for c in convs)
    assert cnn.output_shape == (None, 10)  # 8 -> 4 -> 2 -> 1 with "same" pooling
    with pytest.raises(ValueError, match="expects images"):
        paper_cnn((64,), 10)
    with pytest.raises(ValueError, match="arch='vgg'"):
        build_model("vgg", (8, 8, 1), 10, 1e-3)


def test_names_and_paths():
    assert train.run_dir_name("mlp", "digits", 1e-3) == "mlp-digits-lr0.001"
    assert train.run_dir_name("cnn", "tfds:fashion_mnist", 1e-5) == "cnn-fashion_mnist-lr1e-05"
    assert train.data_slug("tfds:cifar10:test") == "cifar10-test"
    assert train.sweep_figure_path("runs", "mlp", "digits").as_posix() == "runs/mlp-digits-lr-sweep.png"


def test_measurement_steps_are_log_spaced_without_epoch_end_duplicates():
    steps = train.measurement_steps(epochs=4, steps_per_epoch=45, every_n_epochs=1, points_per_decade=6)
    assert steps[:6] == [1, 2, 3, 5, 7, 10]
    assert not set(steps) & {45, 90, 135, 180} and max(steps) <= 180
    assert steps == sorted(steps)


def test_default_val_per_class_caps_at_smallest_class():
    assert train.default_val_per_class(50, np.repeat(np.arange(3), [40, 35, 60]), 3) == 35
    assert train.default_val_per_class(10, np.repeat(np.arange(3), [40, 35, 60]), 3) == 10
    assert train.default_val_per_class(10, None, 3) is None


@pytest.mark.parametrize(
    "field,value,error,match",
    [
        ("epochs", 0, ValueError, "epochs=0"),
        ("learning_rate", -1.0, ValueError, "learning_rate=-1.0"),
        ("arch", "rnn", ValueError, "arch='rnn'"),
        ("per_class", 1.5, TypeError, "per_class=1.5"),
        ("seed", -1, ValueError, "seed=-1"),
        ("epochs", True, TypeError, "epochs=True"),
    ],
)
def test_train_config_validates(field, value, error, match):
    with pytest.raises(error, match=match):
        train.TrainConfig(**{field: value})


def test_check_outputs_refuses_existing_run(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.h5").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        train.check_outputs([run_dir], overwrite=False)
    train.check_outputs([run_dir], overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        train.check_outputs([tmp_path / "file" / "r"], overwrite=False)


def test_paper_first_findings_on_digits(tmp_path):
    """The slow one (~30 s): the paper's MLP on standardized digits, 30 epochs (Adam 1e-3, batch 32)."""
    from keras_stiffness.store.reader import open_run

    config = train.TrainConfig(epochs=30, every_n_epochs=2)
    summary = train.train_run(config, tmp_path / "mlp", figures=False)
    assert json.loads((tmp_path / "mlp" / "summary.json").read_text())["run_file"] == summary["run_file"]
    with open_run(summary["run_file"]) as run:
        tags = run.tags
        within, between = run.series("within"), run.series("between")
        xi = run.series("critical_length")
        p_tt, p_tv = run.pair_sets.index("train-train"), run.pair_sets.index("train-val")
        k_sign, k_cos = run.measures.index("sign"), run.measures.index("cos")
        spaces = run.spaces
        assert run.config["train"]["lr"] == 1e-3

    assert tags["step"][0] == 0 and tags["epoch"][-1] == 30
    # 1. At initialization: sign stiffness ~ +1 within classes, clearly negative between classes.
    assert within[0, p_tt, k_sign] > 0.95
    assert between[0, p_tt, k_sign] < -0.3
    # 3. Overfitting: the train loss gets near 0 while the validation loss rises from its minimum...
    val = tags["val_loss"][np.isfinite(tags["val_loss"])]
    assert tags["train_loss"][-1] < 0.01
    assert val[-1] > val.min()
    # ... and train-val within-class cosine stiffness falls from its maximum.
    tv_within = within[:, p_tv, k_cos]
    assert tv_within[-1] < tv_within.max()
    # 4. The critical length exists for the representation layers, at least at initialization.
    layer_rows = [r for r, name in enumerate(spaces) if name.startswith("dense")]
    assert len(layer_rows) == 3
    assert all(math.isfinite(xi[0, r, k_sign]) for r in layer_rows)
