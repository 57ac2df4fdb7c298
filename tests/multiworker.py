"""Run a small TensorFlow cluster of worker processes on this machine, for the tf.distribute tests.

:func:`run_workers` starts ``W`` Python processes, each with a ``TF_CONFIG`` naming a cluster of ``W``
``"worker"`` tasks on free ports of ``127.0.0.1`` (and no other address) and its own task index, waits
for all of them to stop by themselves, and returns what each printed and its exit code. A cluster that
does not finish within ``timeout`` seconds is killed (every worker's whole process group) and the test
fails with every worker's stderr, so a hung collective never hangs the test run.

A worker runs either a script given as a string (``python -c``) or a function named
``"module:function"`` (called with ``args`` as strings). It learns its place from the environment:
``TF_CONFIG`` (read by ``tf.distribute.MultiWorkerMirroredStrategy``) and ``KSTIFF_WORKER_INDEX`` (its
position, 0..W-1). A worker must create its strategy before running any TensorFlow op.

Example:
    >>> results = run_workers("import os; print(os.environ['KSTIFF_WORKER_INDEX'])", workers=2, timeout=30)
    >>> [r.stdout.strip() for r in results], [r.returncode for r in results]
    (['0', '1'], [0, 0])
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence

import pytest

HOST = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The environment every worker gets on top of the caller's: quiet TensorFlow logs, one thread per op
#: (two cores shared by several processes), no GPU even if one appears.
WORKER_ENV: Dict[str, str] = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_NUM_INTRAOP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONUNBUFFERED": "1",
}

_FUNCTION_LAUNCHER = (
    "import importlib, sys\n"
    "module, _, name = sys.argv[1].partition(':')\n"
    "getattr(importlib.import_module(module), name)(*sys.argv[2:])\n"
)


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """What one worker process left behind."""

    index: int
    returncode: int
    stdout: str
    stderr: str


def free_ports(count: int) -> List[int]:
    """``count`` distinct TCP ports of ``127.0.0.1`` that were free a moment ago (bound to port 0 together).

    Example:
        >>> ports = free_ports(3)
        >>> len(set(ports)) == 3 and all(0 < p < 65536 for p in ports)
        True
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
    return ports


def tf_config(ports: Sequence[int], index: int, *, chief: bool = False) -> str:
    """The ``TF_CONFIG`` JSON of process ``index`` in a cluster on ``127.0.0.1:ports``.

    Args:
        ports: One port per process.
        index: This process's position in ``ports``.
        chief: Process 0 is the ``"chief"`` task and process ``i >= 1`` is ``"worker"`` task ``i - 1``;
            otherwise process ``i`` is ``"worker"`` task ``i``.

    Example:
        >>> json.loads(tf_config([1234, 1235], 1))["task"]
        {'type': 'worker', 'index': 1}
        >>> config = json.loads(tf_config([1234, 1235], 1, chief=True))
        >>> config["cluster"], config["task"]
        ({'chief': ['127.0.0.1:1234'], 'worker': ['127.0.0.1:1235']}, {'type': 'worker', 'index': 0})
    """
    addresses = [f"{HOST}:{port}" for port in ports]
    if chief:
        cluster = {"chief": addresses[:1], "worker": addresses[1:]}
        task = {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
    else:
        cluster, task = {"worker": addresses}, {"type": "worker", "index": index}
    return json.dumps({"cluster": cluster, "task": task})


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the worker is its session's leader: its group id is its pid


def _read(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def run_workers(
    script: Optional[str] = None,
    *,
    function: Optional[str] = None,
    args: Sequence[object] = (),
    workers: int = 2,
    timeout: float = 60.0,
    env: Optional[Mapping[str, str]] = None,
    chief: bool = False,
    cluster: bool = True,
) -> List[WorkerResult]:
    """Run ``workers`` processes as one TensorFlow cluster and return each one's output and exit code.

    Args:
        script: Python source every worker runs (``python -c script args...``).
        function: Instead of ``script``, ``"module:function"`` to import and call as ``function(*args)``
            (module importable from the repository root, e.g. ``"tests.some_module:main"``).
        args: Command-line arguments of every worker (turned into strings).
        workers: The number of worker processes ``W`` (task indices 0..W-1).
        timeout: Seconds the whole cluster may take. After that every worker's process group is killed
            and the calling test fails, showing every worker's stderr.
        env: Extra environment variables for every worker (over :data:`WORKER_ENV`).
        chief: Make process 0 the cluster's ``"chief"`` task (see :func:`tf_config`).
        cluster: False: plain processes with no ``TF_CONFIG`` at all (e.g. one process testing a
            single-machine strategy), still under the same timeout.

    Returns:
        One :class:`WorkerResult` per worker, in task order.

    Raises:
        ValueError: Neither or both of ``script`` and ``function``, or ``workers < 1``.
    """
    if (script is None) == (function is None):
        raise ValueError(
            f"Received: script={script!r} and function={function!r}; expected exactly one of them. "
            "Pass the worker's source as script=... or its 'module:function' as function=..."
        )
    if workers < 1:
        raise ValueError(f"Received: workers={workers!r}; expected a positive integer.")
    if script is not None:
        command = [sys.executable, "-c", script, *map(str, args)]
    else:
        command = [sys.executable, "-c", _FUNCTION_LAUNCHER, function, *map(str, args)]
    ports = free_ports(workers)
    base = dict(os.environ)
    base.pop("TF_CONFIG", None)
    base.update(WORKER_ENV)
    base["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, base.get("PYTHONPATH", "")) if p)
    base.update(env or {})
    procs: List[subprocess.Popen] = []
    outputs = []
    with contextlib.ExitStack() as stack:
        try:
            for index in range(workers):
                out = stack.enter_context(tempfile.TemporaryFile())
                err = stack.enter_context(tempfile.TemporaryFile())
                outputs.append((out, err))
                worker_env = dict(base, KSTIFF_WORKER_INDEX=str(index))
                if cluster:
                    worker_env["TF_CONFIG"] = tf_config(ports, index, chief=chief)
                procs.append(
                    subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        env=worker_env,
                        cwd=ROOT,
                        start_new_session=True,  # its own process group: killed as a whole on timeout
                    )
                )
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.05)
            hung = [i for i, p in enumerate(procs) if p.poll() is None]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    _kill_group(proc)
                proc.wait()
        results = [
            WorkerResult(index, proc.returncode, _read(out), _read(err))
            for index, (proc, (out, err)) in enumerate(zip(procs, outputs))
        ]
    if hung:
        shown = "\n".join(f"--- worker {r.index} (exit {r.returncode}) stderr:\n{r.stderr[-4000:]}" for r in results)
        pytest.fail(f"worker(s) {hung} of {workers} still running after {timeout:g} s; killed them all.\n{shown}")
    return results
