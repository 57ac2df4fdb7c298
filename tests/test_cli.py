"""kstiff as a whole: instant help without heavy imports, and the error policy of the group."""

import os
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from keras_stiffness.cli import errors
from keras_stiffness.cli.main import cli

HEAVY = ("tensorflow", "keras", "matplotlib", "h5py")


def test_importing_the_cli_imports_no_heavy_library():
    code = f"import sys, keras_stiffness.cli.main\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported by the CLI: {out.stdout.strip()}"


def test_help_is_fast():
    kstiff = os.path.join(os.path.dirname(sys.executable), "kstiff")
    command = [kstiff] if os.path.exists(kstiff) else [sys.executable, "-m", "keras_stiffness.cli.main"]
    start = time.perf_counter()
    out = subprocess.run(command + ["--help"], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    print(f"kstiff --help took {elapsed:.3f} s")
    assert "train" in out.stdout and "analyze" in out.stdout
    assert elapsed < 3.0


@pytest.mark.parametrize("command", ["train", "analyze", "plot", "inspect"])
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout and "--help" in result.stdout


def test_train_help_documents_the_output_layout():
    text = CliRunner().invoke(cli, ["train", "--help"]).stdout
    for needle in ("runs/mlp-digits-lr0.001/", "run.h5", "summary.json", "lr-sweep.png", "--lr"):
        assert needle in text


def test_train_default_epochs_match_the_library():
    from keras_stiffness.app.train import DEFAULT_EPOCHS as LIBRARY_DEFAULT
    from keras_stiffness.cli.commands_train import DEFAULT_EPOCHS

    assert DEFAULT_EPOCHS == LIBRARY_DEFAULT


def _group_with(exc: BaseException) -> click.Group:
    @click.group(cls=errors.KstiffGroup)
    @click.option("--debug", is_flag=True)
    @click.pass_context
    def group(ctx, debug):
        ctx.ensure_object(dict)["debug"] = debug

    @group.command()
    def boom():
        raise exc

    return group


@pytest.mark.parametrize(
    "exc,message",
    [
        (ValueError("bad\n  value"), "Error: bad value"),
        (KeyError("missing key"), "Error: missing key"),
        (FileNotFoundError(2, "No such file or directory", "x.h5"), "Error: No such file or directory: 'x.h5'"),
        (TypeError("wrong type"), "Error: wrong type"),
    ],
)
def test_known_errors_become_one_line_exit_1(exc, message):
    result = CliRunner().invoke(_group_with(exc), ["boom"])
    assert result.exit_code == 1
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output


def test_unknown_errors_and_debug_propagate():
    result = CliRunner().invoke(_group_with(RuntimeError("a bug")), ["boom"])
    assert isinstance(result.exception, RuntimeError)  # not hidden behind "Error:"
    result = CliRunner().invoke(_group_with(ValueError("shown with traceback")), ["--debug", "boom"])
    assert isinstance(result.exception, ValueError)


def test_bad_lr_is_a_usage_error(tmp_path):
    for value in ("abc", "0", "-1e-3", "1e-3,x"):
        result = CliRunner().invoke(cli, ["train", "--lr", value, "--out", str(tmp_path)])
        assert result.exit_code == 2, (value, result.output)
        assert "--lr" in result.stderr and "Traceback" not in result.output


def test_unknown_dataset_name_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--data", "emnist", "--out", str(tmp_path)])  # mnist is a preset
    assert result.exit_code == 2
    assert "tfds:emnist" in result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_train_arch_choices_match_the_library():
    from keras_stiffness.app.models import ARCHITECTURES
    from keras_stiffness.cli.commands_train import train_command

    (arch,) = [p for p in train_command.params if p.name == "arch"]
    assert tuple(arch.type.choices) == ARCHITECTURES
