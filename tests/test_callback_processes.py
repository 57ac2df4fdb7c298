"""The run file across processes: read while training writes it; survives SIGKILL of the trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from keras_stiffness import open_run

SCRIPT = os.path.join(os.path.dirname(__file__), "train_script.py")


def start(path, epochs, pause):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, SCRIPT, str(path), str(epochs), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def wait_for(proc, text, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.strip() == text:
            return
    proc.kill()
    pytest.fail(f"the training process never printed {text!r}")


def test_reader_sees_rows_while_training_writes(tmp_path):
    path = tmp_path / "live.h5"
    proc = start(path, epochs=4, pause=1.5)
    try:
        wait_for(proc, "measured 2")
        with open_run(str(path)) as run:
            seen_first = len(run)
            assert seen_first >= 2
            wait_for(proc, "measured 4")
            run.refresh()
            assert len(run) >= 4 > seen_first - 1
            m = run.measurement(-1)
            assert m.class_matrix.shape[-1] == 4
        wait_for(proc, "done")
    finally:
        proc.kill()
        proc.wait()
    with open_run(str(path)) as run:
        assert len(run) == 5


def test_sigkill_keeps_every_completed_measurement(tmp_path):
    path = tmp_path / "killed.h5"
    proc = start(path, epochs=50, pause=0.5)
    try:
        wait_for(proc, "measured 3")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    with open_run(str(path)) as run:
        assert len(run) >= 3
        steps = run.tags["step"]
        assert list(steps[:3]) == [0, 4, 8]
        run.measurement(len(run) - 1)  # the last row reads back whole
