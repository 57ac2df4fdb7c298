"""kstiff analyze in bounded memory: --memory-budget, --block-size, --save-gram (written blockwise),
progress on stderr, and the usage errors of the new options."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from keras_stiffness import open_run
from keras_stiffness.cli.main import cli
from tests import helpers_models


def _model(tmp_path) -> str:
    path = str(tmp_path / "model.keras")
    helpers_models.sequential(seed=0).save(path)
    return path


def _analyze(*args):
    result = CliRunner().invoke(cli, ["analyze", *args])
    assert "Traceback" not in result.output
    return result


PROBES = ["--data", "digits", "--per-class", "5", "--val-per-class", "2", "--bins", "5"]


def test_the_block_size_changes_nothing_but_the_recorded_blocks(tmp_path):
    model = _model(tmp_path)
    runs = {}
    for size in ("3", "100"):
        out = str(tmp_path / f"b{size}.h5")
        result = _analyze(model, *PROBES, "--block-size", size, "--save-gram", "--out", out, "--format", "json")
        assert result.exit_code == 0, result.output
        runs[size] = out
    with open_run(runs["3"]) as small, open_run(runs["100"]) as whole:
        for name in ("within", "between", "class_matrix", "layer_mean", "curve_mean"):
            np.testing.assert_allclose(small.series(name), whole.series(name), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(small.gram(0), whole.gram(0), rtol=1e-5, atol=1e-7 * np.abs(whole.gram(0)).max())
        assert small.tags["block_size"].tolist() == [3.0] and small.tags["blocks"].tolist() == [24.0]
        assert whole.tags["blocks"].tolist() == [1.0] and whole.tags["workers"].tolist() == [1.0]


def test_memory_budget_is_recorded_and_bad_values_are_usage_errors(tmp_path):
    model = _model(tmp_path)
    out = str(tmp_path / "run.h5")
    result = _analyze(model, *PROBES, "--memory-budget", "256MiB", "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_file"] == out
    with open_run(out) as run:
        assert run.tags["memory_budget"].tolist() == [float(256 * 2**20)]
    for bad, needle in (("lots", "expected bytes"), ("1KiB", "at least 16MiB")):
        result = _analyze(model, *PROBES, "--memory-budget", bad)
        assert result.exit_code == 2 and needle in result.output and "--memory-budget" in result.output


def test_save_gram_needs_out_and_one_worker(tmp_path, monkeypatch):
    model = _model(tmp_path)
    result = _analyze(model, *PROBES, "--save-gram")
    assert result.exit_code == 2 and "--out" in result.output
    conf = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(conf))
    result = _analyze(model, *PROBES, "--save-gram", "--out", str(tmp_path / "g.h5"))
    assert result.exit_code == 2 and "2 workers" in result.output
    assert not (tmp_path / "g.h5").exists()


def test_progress_goes_to_stderr_for_long_measurements(tmp_path, monkeypatch):
    from keras_stiffness.measure import progress

    monkeypatch.setattr(progress.Progress, "__init__", _quick_progress_init(progress.Progress.__init__))
    model = _model(tmp_path)
    result = _analyze(model, *PROBES, "--block-size", "10", "--format", "json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # stdout carries only the JSON
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("kstiff analyze: 1/28 blocks") and lines[-1].startswith("kstiff analyze: 28/28 blocks")


def _quick_progress_init(init):
    def quick(self, label="stiffness", **kwargs):
        init(self, label, **{**kwargs, "delay": 0.0, "interval": 0.0})

    return quick
