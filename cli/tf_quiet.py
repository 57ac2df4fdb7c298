"""Keep TensorFlow's C++ start-up notices off kstiff's stderr, without hiding real errors (CLI only).

When TensorFlow is first imported, and when it first looks for a GPU, its C++ runtime writes notices
straight to file descriptor 2, past Python's ``sys.stderr`` and logging. ``TF_CPP_MIN_LOG_LEVEL``
(kstiff sets 2 unless it is set) silences only some of them. Measured with TensorFlow 2.21, CPU only:

- level >= 1 silences the "This TensorFlow binary is optimized to use available CPU instructions"
  notice (and its "To enable the following instructions: ..." line);
- level 3 also silences "failed call to cuInit" (an ERROR-level line, logged when TensorFlow first
  looks for a GPU), but would hide every other C++ error too;
- no level silences what is printed before absl's logging is initialized: "WARNING: All log messages
  before absl::InitializeLog() is called are written to STDERR", the oneDNN notice and "Could not find
  cuda drivers on your machine" (each printed twice, once per TensorFlow shared library).

So, around the first import of TensorFlow, the CLI redirects fd 2 to a temporary file, imports
TensorFlow and lists the GPUs (which triggers cuInit), restores fd 2, then writes back to stderr every
captured line that is not one of the known start-up notices of :data:`STARTUP_NOTICES`. An unknown
line (a real C++ error, a Python warning or traceback text) is shown, only after the import instead
of during it. :func:`install` does it wherever TensorFlow is first imported (``import keras``,
``import tensorflow_datasets``, ...): it puts a finder in front of ``sys.meta_path`` that wraps the
loading of the module ``tensorflow``, so commands keep importing TensorFlow lazily, only when they
need it, and none of them has to call anything. The ``kstiff`` group installs it unless ``--debug``
(or ``KSTIFF_DEBUG=1``) is given, which shows everything TensorFlow prints, unfiltered; use it also
when the process dies during the import (a crash in C++ code), as the captured lines are then lost.

Library code never does this: redirecting a process's fd 2 is the command line's business only.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile
from typing import Iterator, Optional

#: The prefix of a C++ log line: absl's (``I0000 00:00:1796062053.140066   30658 port.cc:153] ``) or
#: the one of TensorFlow before 2.16 (``2024-01-31 12:00:00.123456: I tensorflow/core/util/port.cc:113] ``).
_LOG_PREFIX = r"^(?:[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] )"

#: The lines dropped from fd 2 during the first TensorFlow import: notices that say nothing about
#: kstiff's work (library set-up, no GPU on this machine). Everything else is kept.
STARTUP_NOTICES = tuple(
    re.compile(pattern)
    for pattern in (
        # absl, before its logging is initialized (TF >= 2.16).
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
        # oneDNN is on by default (port.cc).
        _LOG_PREFIX + r"oneDNN custom operations are on\.",
        # No GPU here (cudart_stub.cc), and cuInit failing for that reason when TensorFlow looks for one.
        _LOG_PREFIX + r"Could not find cuda drivers on your machine, GPU will not be used\.",
        _LOG_PREFIX + r"failed call to cuInit: ",
        # The CPU feature notice (cpu_feature_guard.cc) and its second line.
        _LOG_PREFIX + r"This TensorFlow binary is optimized to use available CPU instructions",
        r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
        # CUDA plugins registered twice and TensorRT missing (TF 2.14-2.17 builds with CUDA).
        _LOG_PREFIX + r"Unable to register cu(?:DNN|FFT|BLAS) factory: Attempting to register factory for plugin",
        _LOG_PREFIX + r"computation placer already registered\.",
        _LOG_PREFIX + r"TF-TRT Warning: Could not find TensorRT$",
    )
)


def is_startup_notice(line: str) -> bool:
    """Whether ``line`` (without its newline) is one of TensorFlow's known start-up notices.

    Example:
        >>> is_startup_notice("I0000 00:00:1796062053.140370   30658 cudart_stub.cc:31] Could not find "
        ...                   "cuda drivers on your machine, GPU will not be used.")
        True
        >>> is_startup_notice("E0000 00:00:1796062053.140370   30658 op_kernel.cc:1840] OP_REQUIRES failed")
        False
    """
    line = line.rstrip("\r\n")
    return any(pattern.search(line) for pattern in STARTUP_NOTICES)


def drop_startup_notices(text: str) -> str:
    """``text`` without the lines that are start-up notices; every other line kept, in order.

    Example:
        >>> drop_startup_notices(
        ...     "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n"
        ...     "a real problem\\n"
        ... )
        'a real problem\\n'
    """
    return "".join(line for line in text.splitlines(keepends=True) if not is_startup_notice(line))


@contextlib.contextmanager
def filtered_stderr_fd() -> Iterator[None]:
    """Within the block, fd 2 goes to a temporary file; after it, the non-notice lines go to stderr.

    Python's ``sys.stderr`` is flushed before and after, so what Python writes to the real stderr in
    the block is captured and replayed too. When fd 2 cannot be duplicated (closed), nothing is
    redirected.
    """
    _flush(sys.stderr)
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                _flush(sys.stderr)
                os.dup2(saved, 2)
                capture.seek(0)
                kept = drop_startup_notices(capture.read().decode("utf-8", errors="replace"))
                if kept:
                    sys.stderr.write(kept)
                    _flush(sys.stderr)
    finally:
        os.close(saved)


def _flush(stream) -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()


def _look_for_gpus(tf) -> None:
    """Let TensorFlow look for GPUs now (cuInit and its notice), not at the first operation."""
    with contextlib.suppress(Exception):
        tf.config.list_physical_devices("GPU")


class _QuietLoader(importlib.abc.Loader):
    """Loads ``tensorflow`` with its real loader, inside :func:`filtered_stderr_fd`."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with filtered_stderr_fd():
                self.loader.exec_module(module)
                _look_for_gpus(module)
        finally:
            module.__loader__ = self.loader  # the module keeps no trace of this wrapper
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and wraps its loader; removes itself when used."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        uninstall()
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


_finder: Optional[_QuietTensorFlowFinder] = None


def install() -> None:
    """Filter the start-up notices of the first TensorFlow import from now on (no-op once imported)."""
    global _finder
    if "tensorflow" in sys.modules or _finder is not None:
        return
    _finder = _QuietTensorFlowFinder()
    sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Undo :func:`install` if TensorFlow has not been imported since (harmless otherwise)."""
    global _finder
    if _finder is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_finder)
        _finder = None
