"""kstiff train, plot and inspect on digits with small settings (one short training shared by the module)."""

import json
import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from keras_stiffness.cli.main import cli
from keras_stiffness.store.reader import open_run
from keras_stiffness.store.writer import RunWriter

SMALL = ["--epochs", "3", "--per-class", "10"]
FIGURES = {
    "class_matrices.png",
    "stiffness_vs_training.png",
    "stiffness_vs_distance.png",
    "critical_length.png",
    "layer_stiffness.png",
}


def invoke(args):
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``kstiff train --epochs 3 --per-class 10`` into a fresh folder: (out dir, CLI result)."""
    out = tmp_path_factory.mktemp("runs")
    result = invoke(["train", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_train_writes_run_file_figures_and_summary(trained):
    out, result = trained
    run_dir = out / "mlp-digits-lr0.001"
    assert {p.name for p in run_dir.iterdir()} == FIGURES | {"run.h5", "summary.json"}
    for name in FIGURES:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open_run(str(run_dir / "run.h5")) as run:
        tags = run.tags
        assert run.config["train"]["lr"] == 1e-3 and run.config["train"]["epochs"] == 3
        assert run.pair_sets == ("train-train", "train-val", "val-val")
        assert run.spaces[0] == "input" and len(run.layers) == 4
    steps_per_epoch = int(np.ceil(1438 / 32))
    assert tags["step"][0] == 0 and tags["step"][-1] == 3 * steps_per_epoch
    assert list(tags["step"][:5]) == [0, 1, 2, 3, 5]  # log-spaced from initialization
    assert np.all(np.diff(tags["step"]) > 0)
    epoch_rows = np.isin(tags["step"], [steps_per_epoch * e for e in (1, 2, 3)])
    assert np.isfinite(tags["val_loss"][epoch_rows]).all()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_file"] == str(run_dir / "run.h5") and summary["steps"] == 3 * steps_per_epoch
    # stdout: the summary; stderr: one progress line per epoch.
    for needle in (
        "Run mlp-digits-lr0.001",
        "train-train within sign",
        "xi dense_500",
        "val loss",
        str(run_dir / "run.h5"),
        "Figures: 5 PNG",
    ):
        assert needle in result.stdout
    progress = [line for line in result.stderr.splitlines() if "] epoch " in line]
    assert len(progress) == 3 and "epoch 3/3" in progress[-1]
    assert "] epoch" not in result.stdout


def test_train_refuses_to_overwrite(trained):
    out, _ = trained
    result = invoke(["train", *SMALL, "--out", str(out)])
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "--overwrite" in result.stderr


def test_train_sweep_json_quiet(tmp_path):
    result = invoke(
        [
            "train",
            "--epochs",
            "1",
            "--per-class",
            "5",
            "--lr",
            "1e-3,3e-3",
            "--lr",
            "1e-3",
            "--out",
            str(tmp_path),
            "--quiet",
            "--format",
            "json",
        ]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["train"]["lr"] for r in out["runs"]] == [1e-3, 3e-3]
    assert out["sweep_figure"] == str(tmp_path / "mlp-digits-lr-sweep.png")
    assert os.path.getsize(out["sweep_figure"]) > 0
    assert {p.name for p in tmp_path.iterdir()} == {
        "mlp-digits-lr0.001",
        "mlp-digits-lr0.003",
        "mlp-digits-lr-sweep.png",
    }
    assert "] epoch" not in result.stderr  # --quiet


SEED_RUNS = [
    "mlp-digits-lr0.001-seed0",
    "mlp-digits-lr0.001-seed1",
    "mlp-digits-lr0.01-seed0",
    "mlp-digits-lr0.01-seed1",
]


def test_train_seeds_times_learning_rates(tmp_path):
    """--seeds 0,1 --lr 1e-3,1e-2: four runs named by seed on the same probes, seeds varying the
    initialization, the summary listing every run, and the sweep figure (mean and band across seeds)."""
    args = ["train", "--seeds", "0,1", "--lr", "1e-3,1e-2", "--epochs", "1", "--per-class", "3"]
    result = invoke([*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "] training mlp on digits for 1 epochs (lr 0.001, batch 32, seed 1)" in result.stderr
    assert "Runs: 4 (2 learning rate(s) x 2 seed(s))" in result.stdout
    for name in SEED_RUNS:
        assert f"Run {name}:" in result.stdout and str(tmp_path / name) in result.stdout
    sweep = tmp_path / "mlp-digits-lr-sweep.png"
    assert result.stdout.rstrip().endswith(f"Sweep figure (xi vs learning rate): {sweep}")
    assert sweep.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*SEED_RUNS, sweep.name])
    init = {}
    for name in SEED_RUNS:
        with open_run(str(tmp_path / name / "run.h5")) as run:
            train = run.config["train"]
            assert (train["seed"], f"lr{train['lr']:g}-seed{train['init_seed']}") == (0, name.split("-", 2)[2])
            init[name] = (run.info.probe_hash, run.measurement(0).between.copy())
        assert json.loads((tmp_path / name / "summary.json").read_text())["train"] == train
    assert len({probe_hash for probe_hash, _ in init.values()}) == 1  # same data split and probes
    a, b, c = (init[n][1] for n in SEED_RUNS[:3])
    np.testing.assert_array_equal(a, c)  # same seed, another learning rate: the same initialization
    assert not np.allclose(a, b)  # another seed: another initialization
    # check_outputs covers every run before training: one existing run file stops the whole sweep
    result = invoke([*args, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "mlp-digits-lr0.001-seed0" in result.stderr and "--overwrite" in result.stderr
    for bad, needle in (("-1", "'-1' is negative"), ("a", "'a' is not an integer")):
        result = invoke(["train", "--seeds", bad, "--out", str(tmp_path / "none")])
        assert result.exit_code == 2 and needle in result.stderr
    assert not (tmp_path / "none").exists()


def test_inspect_table_and_json(trained):
    out, _ = trained
    path = str(out / "mlp-digits-lr0.001" / "run.h5")
    result = invoke(["inspect", path])
    assert result.exit_code == 0, result.output
    with open_run(path) as run:
        n = len(run)
    for needle in (f"Measurements: {n}", "paper_mlp", "Probes: digits: 100 train", "dense_500", "tt within sign"):
        assert needle in result.stdout
    result = invoke(["inspect", path, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run"]["n_measurements"] == n == len(data["measurements"])
    assert data["run"]["train"]["epochs"] == 3 and data["run"]["format_version"] >= 1
    first = data["measurements"][0]
    assert first["step"] == 0 and first["val_loss"] is None
    assert set(first["pair_sets"]) == {"train-train", "train-val", "val-val"}
    assert first["pair_sets"]["train-train"]["sign"]["within"] > 0.95
    assert [layer["name"] for layer in first["layers"]][:2] == ["input", "dense_500"]


def test_inspect_while_a_writer_is_appending(trained, tmp_path):
    out, _ = trained
    with open_run(str(out / "mlp-digits-lr0.001" / "run.h5")) as run:
        info, rows = run.info, [run.measurement(0), run.measurement(1)]
    path = str(tmp_path / "live.h5")
    writer = RunWriter.create(path, info)
    try:
        writer.append(rows[0])
        result = invoke(["inspect", path, "--format", "json"])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["measurements"]) == 1
        writer.append(rows[1])
        result = invoke(["inspect", path])
        assert result.exit_code == 0 and "Measurements: 2" in result.stdout
    finally:
        writer.close()


def test_plot_one_and_several_runs(trained, tmp_path):
    out, _ = trained
    path = str(out / "mlp-digits-lr0.001" / "run.h5")
    result = invoke(["plot", path, "--out", str(tmp_path / "one"), "--measure", "cos", "--at", "0,-1"])
    assert result.exit_code == 0, result.output
    written = result.stdout.split()
    assert {os.path.basename(p) for p in written} == FIGURES and all(os.path.exists(p) for p in written)
    # Two runs of different learning rates: figures prefixed by run, plus the sweep figure.
    with open_run(path) as run:
        info, rows = run.info, list(run)
    other = tmp_path / "mlp-digits-lr0.01" / "run.h5"
    other.parent.mkdir()
    info.config["train"]["lr"] = 1e-2
    with RunWriter.create(str(other), info) as writer:
        for m in rows:
            writer.append(m)
    result = invoke(["plot", path, str(other), "--out", str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    names = {os.path.basename(p) for p in result.stdout.split()}
    assert "mlp-digits-lr0.001-class_matrices.png" in names and "mlp-digits-lr0.01-class_matrices.png" in names
    assert "lr-sweep.png" in names and len(names) == 2 * len(FIGURES) + 1


def _future_version_copy(src, dst):
    dst.write_bytes(open(src, "rb").read())
    with h5py.File(dst, "r+") as f:
        f.attrs["format_version"] = np.int64(f.attrs["format_version"]) + 1
    return str(dst)


def test_bad_run_files(trained, tmp_path):
    out, _ = trained
    future = _future_version_copy(out / "mlp-digits-lr0.001" / "run.h5", tmp_path / "future.h5")
    not_run = tmp_path / "plain.h5"
    with h5py.File(not_run, "w") as f:
        f["x"] = np.zeros(2)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    for command in ("inspect", "plot"):
        for path, needle in (
            (future, "newer keras_stiffness"),
            (str(not_run), "expected a keras_stiffness run"),
            (str(text), str(text)),
        ):
            result = invoke([command, path])
            assert result.exit_code == 1, (command, path, result.output)
            lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
            assert len(lines) == 1 and needle in lines[0], result.stderr
        result = invoke([command, str(tmp_path / "missing.h5")])
        assert result.exit_code == 2 and "does not exist" in result.stderr


def test_train_cnn_without_figures(tmp_path):
    result = invoke(
        ["train", "--arch", "cnn", "--epochs", "1", "--per-class", "5", "--no-figures", "--out", str(tmp_path), "-q"]
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "cnn-digits-lr0.001"
    assert {p.name for p in run_dir.iterdir()} == {"run.h5", "summary.json"}
    with open_run(str(run_dir / "run.h5")) as run:
        assert run.layers == ("conv1", "conv2", "conv3", "output")
        assert run.config["train"]["arch"] == "cnn"


def test_plot_of_unrelated_runs_skips_the_sweep_figure_with_a_note(tmp_path):
    """Two runs that are not one learning-rate sweep (different layers): each run's figures, a note on
    stderr instead of the sweep figure, exit 0; asking for the sweep explicitly is an error."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    mlp = os.path.join(root, "saved_runs", "mlp-digits-lr0.001", "run.h5")
    cnn = os.path.join(root, "saved_runs", "cnn-digits-lr0.001", "run.h5")
    result = CliRunner().invoke(cli, ["plot", str(mlp), str(cnn), "--out", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    assert "no learning-rate sweep figure" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "figs" / "lr-sweep.png").exists()
    result = CliRunner().invoke(
        cli, ["plot", str(mlp), str(cnn), "--out", str(tmp_path / "again"), "--sweep-out", str(tmp_path / "sweep.png")]
    )
    assert result.exit_code == 1 and "different distance spaces" in result.stderr
