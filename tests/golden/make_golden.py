"""Golden outputs of ``kstiff`` on the reference runs and on bad input (read by tests/test_cli_golden.py).

The files ``tests/golden/*.txt`` were generated from the code BEFORE the subpackage refactor
(commit d5c2f43, "FunctionAdapter uses the engine's total_of and check_losses ..."), by running the
real command (``python -m keras_stiffness.cli.main ARGS``, what the ``kstiff`` script runs) in a
subprocess, once per case. They pin what a user sees: stdout, stderr and the exit code, for

* ``kstiff inspect RUN.h5`` and ``--format json`` on the run files of ``RUNS`` (reference runs in
  ``saved_runs/`` and the format-1 fixture ``tests/data/run_format1.h5``);
* ``kstiff plot`` of the mlp run and of the 15 sweep runs (the written paths; figures go to a
  temporary folder, never into ``saved_runs/``);
* the help texts, ``--version``, and the errors for bad input (missing or wrong files, bad options,
  a saved model that does not fit) of every command; none of the ``train`` cases trains.

Each case is one file ``<name>.txt``: the command line, the exit code, stdout and stderr, after
:func:`normalize` (temporary paths -> ``<tmp>``, the repository -> ``<repo>``, the home folder ->
``<home>``, TensorFlow's C++/absl log lines dropped). Help is formatted for an 80-column terminal
(COLUMNS=80). The test runs the same cases in-process (click.testing.CliRunner) and compares.

Regenerate (only when a change of behaviour is intended, or to check old against new):

    git worktree add /tmp/old d5c2f43               # the code before the refactor
    ln -s ../cli /tmp/old/keras_stiffness/cli       # the CLI package as setup.py installs it
    .venv/bin/python tests/golden/make_golden.py --code /tmp/old

When ``saved_runs/`` was regenerated (issue 10: runs of format version 2, the sweep with 3 seeds), the
cases reading it (``inspect-mlp*``, ``inspect-cnn*``, ``inspect-resnet20*``, ``inspect-sweep-*``,
``plot-mlp``, ``plot-sweep``, ``plot-bad-match``)
and ``inspect-format1*`` (the old v1 run, moved to ``tests/data/``) were regenerated with the work tree's
code (``--only CASE``); the other cases are still the old code's output.

``--code DIR`` puts DIR first on PYTHONPATH (the script checks that ``keras_stiffness`` is then
imported from DIR); without it, the installed package (this work tree) is used. ``--out DIR`` writes
the files elsewhere (e.g. to compare two versions), ``--only NAME`` runs the named cases only.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: The runs ``inspect`` is pinned on: the reference runs of ``saved_runs/`` (format version 2; of the
#: sweep's 15 runs the lowest and the highest learning rate) and ``tests/data/run_format1.h5``, a run
#: file of format version 1 (the old ``saved_runs/sweep/mlp-digits-lr0.001/run.h5``).
RUNS: Dict[str, str] = {
    "mlp": "saved_runs/mlp-digits-lr0.001/run.h5",
    "cnn": "saved_runs/cnn-digits-lr0.001/run.h5",
    "resnet20": "saved_runs/resnet20-digits-lr0.001/run.h5",
    "sweep-lr0.0001-seed0": "saved_runs/sweep/mlp-digits-lr0.0001-seed0/run.h5",
    "sweep-lr0.01-seed2": "saved_runs/sweep/mlp-digits-lr0.01-seed2/run.h5",
    "format1": "tests/data/run_format1.h5",
}
#: The whole sweep of saved_runs/sweep: 5 learning rates x 3 seeds.
SWEEP_LRS = ("0.0001", "0.0003", "0.001", "0.003", "0.01")
SWEEP = [f"{{repo}}/saved_runs/sweep/mlp-digits-lr{lr}-seed{seed}/run.h5" for lr in SWEEP_LRS for seed in (0, 1, 2)]
MLP = f"{{repo}}/{RUNS['mlp']}"

#: Environment of every case: a fixed terminal width for the help texts, no debug tracebacks, and
#: TFDS looking in the temporary folder (its default, ~/tensorflow_datasets, varies by user).
ENV = {"COLUMNS": "80", "KSTIFF_DEBUG": None, "TFDS_DATA_DIR": "{tmp}/tensorflow_datasets"}
#: The width Click then wraps help to: min(COLUMNS, max_content_width=100) - 2. An in-process run with
#: click.testing.CliRunner (which forces 80) passes it on: invoke(..., terminal_width=HELP_WIDTH).
HELP_WIDTH = 78


@dataclass(frozen=True)
class Case:
    """One ``kstiff`` invocation; ``{repo}`` and ``{tmp}`` in ``args`` are filled in when run."""

    name: str
    args: Tuple[str, ...]
    plot: bool = False  # draws figures into {tmp}/<name>/ (slowest cases)

    def argv(self, repo: str, tmp: str) -> List[str]:
        return [a.format(repo=repo, tmp=tmp) for a in self.args]

    def command_line(self) -> str:
        return " ".join(["kstiff", shlex.join(self.argv("<repo>", "<tmp>"))]).rstrip()


#: Golden texts longer than this are stored gzip-compressed (the JSON of a whole run is ~1.7 MB).
GZIP_ABOVE = 100_000


def write_golden(out_dir: pathlib.Path, name: str, text: str) -> None:
    """Store one case's text as NAME.txt, or NAME.txt.gz when it is long (the other form is removed)."""
    plain, packed = out_dir / f"{name}.txt", out_dir / f"{name}.txt.gz"
    if len(text) > GZIP_ABOVE:
        packed.write_bytes(gzip.compress(text.encode(), mtime=0))
        plain.unlink(missing_ok=True)
    else:
        plain.write_text(text)
        packed.unlink(missing_ok=True)


def read_golden(out_dir: pathlib.Path, name: str):
    """The stored text of one case, or None when there is none."""
    plain, packed = out_dir / f"{name}.txt", out_dir / f"{name}.txt.gz"
    if packed.is_file():
        return gzip.decompress(packed.read_bytes()).decode()
    return plain.read_text() if plain.is_file() else None


def _cases() -> List[Case]:
    c: List[Case] = []

    def add(name: str, *args: str, **kw) -> None:
        c.append(Case(name, tuple(args), **kw))

    # Help and version.
    add("help", "--help")
    add("help-short-flag", "-h")
    for command in ("train", "analyze", "plot", "inspect"):
        add(f"help-{command}", command, "--help")
    add("version", "--version")
    add("no-arguments")
    add("unknown-command", "nosuch")
    add("unknown-global-option", "--nosuch", "inspect", MLP)

    # inspect on every reference run, as a table and as JSON.
    for key, rel in RUNS.items():
        add(f"inspect-{key}", "inspect", f"{{repo}}/{rel}")
        add(f"inspect-{key}-json", "inspect", f"{{repo}}/{rel}", "--format", "json")
    # inspect on bad input.
    add("inspect-missing-file", "inspect", "{tmp}/nosuch.h5")
    add("inspect-not-hdf5", "inspect", "{tmp}/not_hdf5.h5")
    add("inspect-empty-file", "inspect", "{tmp}/empty.h5")
    add("inspect-hdf5-not-a-run", "inspect", "{tmp}/not_a_run.h5")
    add("inspect-directory", "inspect", "{repo}/saved_runs")
    add("inspect-no-argument", "inspect")
    add("inspect-bad-format", "inspect", MLP, "--format", "xml")
    add("inspect-two-files", "inspect", MLP, MLP)

    # plot: the written paths (figures compared pixel by pixel once, not here), and bad input.
    add("plot-mlp", "plot", MLP, "--out", "{tmp}/plot-mlp", plot=True)
    add("plot-sweep", "plot", *SWEEP, "--out", "{tmp}/plot-sweep", plot=True)
    add("plot-bad-measure", "plot", MLP, "--measure", "nope", "--out", "{tmp}/plot-bad")
    add("plot-bad-match", "plot", *SWEEP, "--match", "nope", "--out", "{tmp}/plot-bad")
    add("plot-bad-at", "plot", MLP, "--at", "x", "--out", "{tmp}/plot-bad")
    add("plot-unknown-option", "plot", MLP, "--nosuch")
    add("plot-missing-file", "plot", "{tmp}/nosuch.h5", "--out", "{tmp}/plot-bad")
    add("plot-not-hdf5", "plot", "{tmp}/not_hdf5.h5", "--out", "{tmp}/plot-bad")
    add("plot-hdf5-not-a-run", "plot", "{tmp}/not_a_run.h5", "--out", "{tmp}/plot-bad")
    add("plot-no-argument", "plot")
    add("plot-out-is-a-file", "plot", MLP, "--out", "{tmp}/notes.txt")

    # analyze on bad input (each fails before measuring).
    add("analyze-missing-model", "analyze", "{tmp}/nosuch.keras")
    add("analyze-run-file-as-model", "analyze", MLP)
    add("analyze-txt-file", "analyze", "{tmp}/notes.txt")
    add("analyze-not-hdf5-h5", "analyze", "{tmp}/not_hdf5.h5")
    add("analyze-no-argument", "analyze")
    add("analyze-unknown-layer", "analyze", "{tmp}/tiny.keras", "--layers", "nosuch")
    add("analyze-unknown-layer-among-known", "analyze", "{tmp}/tiny.keras", "--layers", "hidden,nosuch")
    add("analyze-uncompiled-model", "analyze", "{tmp}/tiny_uncompiled.keras")
    add("analyze-wrong-input-shape", "analyze", "{tmp}/tiny_wide.keras")
    add("analyze-too-few-outputs", "analyze", "{tmp}/tiny_3_classes.keras")
    add("analyze-bad-metric", "analyze", "{tmp}/tiny.keras", "--metric", "nope")
    add("analyze-bad-data", "analyze", "{tmp}/tiny.keras", "--data", "nosuch")
    add("analyze-missing-npz", "analyze", "{tmp}/tiny.keras", "--data", "{tmp}/nosuch.npz")
    add("analyze-bad-custom-objects", "analyze", "{tmp}/tiny.keras", "--custom-objects", "nocolon")
    add(
        "analyze-missing-custom-module", "analyze", "{tmp}/tiny.keras", "--custom-objects", "nosuch_module_kstiff:Thing"
    )
    add("analyze-out-exists", "analyze", "{tmp}/tiny.keras", "--out", "{tmp}/notes.txt")
    add("analyze-bins-zero", "analyze", "{tmp}/tiny.keras", "--bins", "0")

    # train on bad input (each fails before training).
    add("train-epochs-0", "train", "--epochs", "0")
    add("train-lr-negative", "train", "--lr", "-1")
    add("train-lr-zero-in-list", "train", "--lr", "1e-3,0")
    add("train-lr-not-a-number", "train", "--lr", "abc")
    add("train-data-nosuch", "train", "--data", "nosuch")
    add("train-data-tfds-nosuchset", "train", "--data", "tfds:nosuchset")
    add("train-data-tfds-bad-name", "train", "--data", "tfds:no such")
    add("train-data-missing-npz", "train", "--data", "{tmp}/nosuch.npz")
    add("train-bad-arch", "train", "--arch", "rnn")
    add("train-per-class-0", "train", "--per-class", "0")
    add("train-batch-size-0", "train", "--batch-size", "0")
    add("train-bad-format", "train", "--format", "xml")
    add("train-out-is-a-file", "train", "--out", "{tmp}/notes.txt")
    add("train-out-under-a-file", "train", "--out", "{tmp}/notes.txt/runs")
    add("train-run-exists", "train", "--out", "{tmp}/existing")
    return c


CASES: List[Case] = _cases()


# --------------------------------------------------------------------------------------------------
# Input files of the cases (made afresh in a temporary folder by the script and by the test).


def make_inputs(tmp: pathlib.Path) -> None:
    """Write the bad or small input files the cases name, into ``tmp``."""
    import h5py
    import numpy as np

    (tmp / "not_hdf5.h5").write_text("this is not an HDF5 file\n")
    (tmp / "empty.h5").write_bytes(b"")
    (tmp / "notes.txt").write_text("not a model\n")
    with h5py.File(tmp / "not_a_run.h5", "w") as f:
        f.create_dataset("x", data=np.arange(3))
        f.attrs["note"] = "an HDF5 file that is not a kstiff run"
    existing = tmp / "existing" / "mlp-digits-lr0.001"
    existing.mkdir(parents=True, exist_ok=True)
    (existing / "run.h5").write_bytes(b"")
    (tmp / "tensorflow_datasets").mkdir(exist_ok=True)
    make_models(tmp)


def make_models(tmp: pathlib.Path) -> None:
    """Tiny saved Keras models (named layers, so their names do not depend on what ran before)."""
    import keras

    def model(name, input_shape=(8, 8, 1), n_out=10, compiled=True):
        m = keras.Sequential(
            [
                keras.Input(input_shape),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(4, activation="relu", name="hidden"),
                keras.layers.Dense(n_out, activation="softmax", name="probs"),
            ],
            name=name,
        )
        if compiled:
            m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.save(tmp / f"{name}.keras")

    model("tiny")
    model("tiny_uncompiled", compiled=False)
    model("tiny_wide", input_shape=(5,))
    model("tiny_3_classes", n_out=3)


# --------------------------------------------------------------------------------------------------
# Normalization and the golden file format.

#: Lines TensorFlow/absl print on stderr by themselves (C++ logging, oneDNN and CPU notices).
NOISE = [
    re.compile(p)
    for p in (
        r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]",  # absl C++ log line
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
        r"oneDNN custom operations are on",
        r"TF_ENABLE_ONEDNN_OPTS",
        r"This TensorFlow binary is optimized to use available CPU instructions",
        r"To enable the following instructions: .* rebuild TensorFlow",
        r"Unable to register cu(DNN|FFT|BLAS) factory",
        r"Could not find cuda drivers on your machine",
        r"computation_placer\.cc",
        r"cuda_(dnn|fft|blas|executor|platform)\.cc",
        r"failed call to cuInit",
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ",  # older TF log format
    )
]


def normalize(text: str, *, repo: str, tmp: str, stderr: bool = False) -> str:
    """Replace what varies between machines and runs by placeholders; drop TF's log lines."""
    for path, mark in _path_marks(repo, tmp):
        text = text.replace(path, mark)
    lines = text.splitlines()
    if stderr:
        lines = [line for line in lines if not any(p.search(line) for p in NOISE)]
    if not lines:
        return ""
    end = "\n" if text.endswith("\n") else "\n[no newline at end]\n"
    return "\n".join(lines) + end


def _path_marks(repo: str, tmp: str) -> List[Tuple[str, str]]:
    marks = []
    for path, mark in ((tmp, "<tmp>"), (repo, "<repo>"), (str(pathlib.Path.home()), "<home>")):
        for form in {path, os.path.realpath(path)}:
            if len(form) > 1:
                marks.append((form, mark))
    return sorted(marks, key=lambda pm: -len(pm[0]))  # longest first: tmp before a parent of it


def render(case: Case, exit_code: int, stdout: str, stderr: str, *, repo: str, tmp: str) -> str:
    """The text of a golden file."""
    return (
        f"$ {case.command_line()}\n"
        f"exit code: {exit_code}\n"
        f"--- stdout ---\n{normalize(stdout, repo=repo, tmp=tmp)}"
        f"--- stderr ---\n{normalize(stderr, repo=repo, tmp=tmp, stderr=True)}"
    )


def written_files(case: Case, tmp: str) -> Optional[List[str]]:
    """Names of the files a plot case wrote (None for other cases)."""
    if not case.plot:
        return None
    folder = pathlib.Path(tmp) / case.name
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------------------------------
# Running the real command in a subprocess.


def case_env(tmp: str, code: Optional[str]) -> Dict[str, str]:
    env = dict(os.environ)
    for key, value in ENV.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value.format(tmp=tmp)
    env.pop("PYTHONPATH", None)
    if code:
        env["PYTHONPATH"] = code
    return env


def check_code(code: Optional[str], python: str = sys.executable) -> str:
    """Where ``keras_stiffness`` is imported from with ``code`` on PYTHONPATH (checked to be in it)."""
    env = case_env(tempfile.gettempdir(), code)
    where = subprocess.run(
        [python, "-c", "import keras_stiffness.cli.main as m, keras_stiffness as k; print(k.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        check=True,
    ).stdout.strip()
    if code and not os.path.realpath(where).startswith(os.path.realpath(code)):
        raise SystemExit(f"keras_stiffness comes from {where}, not from --code {code}")
    return where


def run_case(
    case: Case, tmp: str, code: Optional[str], python: str = sys.executable, repo: str = str(REPO)
) -> Tuple[int, str, str]:
    """Run ``kstiff ARGS`` as a user would; ``(exit code, stdout, stderr)``, not normalized."""
    out = subprocess.run(
        [python, "-m", "keras_stiffness.cli.main", *case.argv(repo, tmp)],
        capture_output=True,
        text=True,
        env=case_env(tmp, code),
        cwd=tmp,
        timeout=600,
    )
    return out.returncode, out.stdout, out.stderr


def generate(out_dir: pathlib.Path, code: Optional[str], only: Sequence[str] = ()) -> List[str]:
    """Write one golden file per case into ``out_dir``; return the names written."""
    where = check_code(code)
    print(f"kstiff from {where}", file=sys.stderr)
    cases = [c for c in CASES if not only or c.name in only]
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    with tempfile.TemporaryDirectory(prefix="kstiff-golden-") as tmp:
        make_inputs(pathlib.Path(tmp))
        for case in cases:
            code_, stdout, stderr = run_case(case, tmp, code)
            text = render(case, code_, stdout, stderr, repo=str(REPO), tmp=tmp)
            files = written_files(case, tmp)
            if files is not None:
                text += "--- files written ---\n" + "".join(f"{n}\n" for n in files)
            write_golden(out_dir, case.name, text)
            names.append(case.name)
            print(f"{case.name}: exit {code_}", file=sys.stderr)
    return names


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", default=None, help="checkout whose keras_stiffness is run (PYTHONPATH)")
    parser.add_argument("--out", default=str(HERE), help="folder of the golden files (default: here)")
    parser.add_argument("--only", action="append", default=[], help="case name (repeatable)")
    args = parser.parse_args(argv)
    unknown = set(args.only) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown cases: {sorted(unknown)}")
    generate(pathlib.Path(args.out), args.code, args.only)


if __name__ == "__main__":
    main()
