"""kstiff against golden outputs: the same text, exit code and files as before the subpackage refactor.

The golden files in ``tests/golden/`` are what the real ``kstiff`` of commit d5c2f43 (before the
refactor) printed for each case of ``tests/golden/make_golden.py``: ``inspect`` (table and JSON) of
the reference runs in ``saved_runs/`` and of a format-1 run file (``tests/data/run_format1.h5``), ``plot`` of
the mlp run and of the sweep (written paths and file names;
the figures' pixels were compared once, not here), the help texts, and the errors for bad input. This
test runs the current CLI in-process on the same cases, normalizes the output the same way, and fails
with a unified diff. No case trains: every ``train`` case is bad input that fails before training
(``keras.Model.fit`` is replaced by a function that fails, to keep it so).

After an intended change of output, regenerate the golden files (see make_golden.py) and review
their diff.
"""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
import sys
import traceback

import pytest
from click.testing import CliRunner

from keras_stiffness.cli.main import cli

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"


def _load_make_golden():
    spec = importlib.util.spec_from_file_location("kstiff_make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


golden = _load_make_golden()
REPO = str(golden.REPO)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> pathlib.Path:
    """The cases' input files (bad files, tiny saved models); the cases' outputs go here too."""
    tmp = tmp_path_factory.mktemp("kstiff-golden")
    golden.make_inputs(tmp)
    return tmp


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    import keras

    def fit(*args, **kwargs):
        raise RuntimeError("a golden case started training: its bad input should have failed before")

    monkeypatch.setattr(keras.Model, "fit", fit)


def run_in_process(case, tmp: pathlib.Path, monkeypatch) -> str:
    """Run the case with Click's runner, as ``kstiff`` would be run; the golden file's text."""
    monkeypatch.chdir(tmp)  # make_golden runs the command in its temporary folder
    env = {key: None if value is None else value.format(tmp=tmp) for key, value in golden.ENV.items()}
    result = CliRunner().invoke(
        cli, case.argv(REPO, str(tmp)), prog_name="kstiff", env=env, terminal_width=golden.HELP_WIDTH
    )  # as a subprocess with COLUMNS=80
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # The real command would print the traceback of an uncaught exception on stderr.
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(*result.exc_info)[1:])
    text = golden.render(case, result.exit_code, result.stdout, stderr, repo=REPO, tmp=str(tmp))
    files = golden.written_files(case, str(tmp))
    if files is not None:
        text += "--- files written ---\n" + "".join(f"{name}\n" for name in files)
    return text


#: Plot cases whose figures are built but not rendered here: rendering the sweep's 76 PNGs takes over a minute,
#: and the test pins the printed paths and written file names (the pixels of both plot cases were
#: compared with the old code's once). plot-mlp still renders its 5 figures for real.
UNRENDERED = {"plot-sweep"}


def _savefig_without_rendering(fig, fname, *args, **kwargs):
    pathlib.Path(fname).write_bytes(b"")


@pytest.mark.parametrize("case", golden.CASES, ids=[c.name for c in golden.CASES])
def test_output_matches_golden(case, inputs, monkeypatch):
    expected = golden.read_golden(GOLDEN, case.name)
    assert expected is not None, f"no golden file for {case.name}; generate it with tests/golden/make_golden.py"
    if case.name in UNRENDERED:
        import matplotlib.figure

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _savefig_without_rendering)
    actual = run_in_process(case, inputs, monkeypatch)
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"tests/golden/{case.name} (before the refactor)",
                tofile=f"kstiff now: {case.name}",
            )
        )
        pytest.fail(f"`{case.command_line()}` differs from its golden output:\n{diff}", pytrace=False)


def test_every_golden_file_belongs_to_a_case():
    names = {c.name for c in golden.CASES}
    assert len(names) == len(golden.CASES), "two cases share a name"
    files = {p.name.removesuffix(".gz").removesuffix(".txt") for p in [*GOLDEN.glob("*.txt"), *GOLDEN.glob("*.txt.gz")]}
    assert files == names, (
        f"golden files without a case: {sorted(files - names)}; cases without a golden file: {sorted(names - files)}"
    )
