"""TensorFlow's C++ start-up notices stay off kstiff's stderr; other lines printed meanwhile are kept."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import pytest

from keras_stiffness.cli import tf_quiet

REPO = pathlib.Path(__file__).resolve().parents[1]

#: What TensorFlow 2.21 printed on a CPU-only machine (the first five at import, twice over; the cuInit
#: line when it first looked for a GPU), and the same notices in the log format of TensorFlow < 2.16.
NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796062053.140066   30658 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To "
    "turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796062053.140370   30658 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796062053.180843   30658 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX_VNNI FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796062059.516483   30692 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "2024-01-31 12:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on. You may see "
    "slightly different numerical results.",
    "2024-01-31 12:00:00.123456: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:9261] Unable to register "
    "cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered",
    "2024-01-31 12:00:00.123456: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT Warning: Could not "
    "find TensorRT",
]

#: Lines that must survive: real errors and warnings, from C++ or Python, and kstiff's own lines.
KEPT = [
    "E0000 00:00:1796062059.516483   30692 op_kernel.cc:1840] OP_REQUIRES failed at xla_ops.cc:580 : NOT_FOUND",
    "F0000 00:00:1796062059.516483   30692 port.cc:153] Check failed: oneDNN custom operations are on",
    "2024-01-31 12:00:00.123456: E tensorflow/core/platform/cloud/gcs_file_system.cc:1] could not load",
    "ImportError: libcudart.so.12: cannot open shared object file: No such file or directory",
    "Traceback (most recent call last):",
    "UserWarning: oneDNN custom operations are on",  # a notice's words, but not as TensorFlow logs them
    "Error: Model 'tiny' expects inputs of shape (5), but data 'digits' gives (8, 8, 1).",
    "kstiff train: loading TensorFlow and data 'digits' ...",
    "",
]


@pytest.mark.parametrize("line", NOTICES)
def test_known_notices_are_dropped(line):
    assert tf_quiet.is_startup_notice(line)
    assert tf_quiet.is_startup_notice(line + "\n")


@pytest.mark.parametrize("line", KEPT)
def test_other_lines_are_kept(line):
    assert not tf_quiet.is_startup_notice(line)


def test_filter_keeps_a_non_notice_line_between_notices():
    text = "\n".join([*NOTICES[:3], "a real problem printed during import", *NOTICES[3:]]) + "\n"
    assert tf_quiet.drop_startup_notices(text) == "a real problem printed during import\n"
    assert tf_quiet.drop_startup_notices("no newline at the end") == "no newline at the end"
    assert tf_quiet.drop_startup_notices("") == ""


def test_filtered_stderr_fd_replays_what_is_not_a_notice(capfd):
    with tf_quiet.filtered_stderr_fd():
        os.write(2, ("\n".join([NOTICES[0], "C++ error line", NOTICES[2]]) + "\n").encode())
        print("python line", file=sys.stderr)
    print("after the block", file=sys.stderr)
    err = capfd.readouterr().err
    assert "C++ error line\n" in err and "python line\n" in err and err.endswith("after the block\n")
    assert not any(tf_quiet.is_startup_notice(line) for line in err.splitlines())


FAKE_TENSORFLOW = '''
"""A stand-in for TensorFlow that prints, on fd 2, what the real one prints at import (and one more line)."""
import os
os.write(2, NOTICES_AT_IMPORT.encode())
os.write(2, b"a real problem printed during import\\n")
class config:
    @staticmethod
    def list_physical_devices(kind):
        os.write(2, CUINIT.encode())
        return []
'''


def test_first_import_is_filtered_in_a_real_process(tmp_path):
    """With the finder installed, importing 'tensorflow' drops the notices and keeps the other line."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    source = FAKE_TENSORFLOW.replace("NOTICES_AT_IMPORT", repr("\n".join(NOTICES[:5]) + "\n"))
    (package / "__init__.py").write_text(source.replace("CUINIT", repr(NOTICES[5] + "\n")))
    script = textwrap.dedent(
        """
        import sys
        from keras_stiffness.cli import tf_quiet
        if sys.argv[1] == "install":
            tf_quiet.install()
        import tensorflow
        tensorflow.config.list_physical_devices("GPU")
        assert type(tensorflow.__loader__).__name__ != "_QuietLoader", tensorflow.__loader__
        assert tensorflow.__spec__.loader is tensorflow.__loader__
        assert not any(type(f).__name__ == "_QuietTensorFlowFinder" for f in sys.meta_path)
        print("after import", file=sys.stderr)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    quiet = subprocess.run([sys.executable, "-c", script, "install"], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    # The finder's own GPU look-up (during the import) was filtered; the script's second call is not.
    assert quiet.stderr == "a real problem printed during import\n" + NOTICES[5] + "\nafter import\n"
    loud = subprocess.run([sys.executable, "-c", script, "no"], capture_output=True, text=True, env=env)
    assert loud.returncode == 0, loud.stderr
    assert loud.stderr.splitlines()[:6] == [*NOTICES[:5], "a real problem printed during import"]


# ------------------------------------------------------------------------------------------------
# The real kstiff with the real TensorFlow, in subprocesses
# ------------------------------------------------------------------------------------------------


def _kstiff(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KSTIFF_DEBUG")}
    return subprocess.run(
        [sys.executable, "-m", "keras_stiffness.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _notices(stderr: str):
    return [line for line in stderr.splitlines() if tf_quiet.is_startup_notice(line)]


def test_inspect_stderr_has_no_notices():
    proc = _kstiff("inspect", str(REPO / "saved_runs" / "mlp-digits-lr0.001" / "run.h5"))
    assert proc.returncode == 0, proc.stderr
    assert _notices(proc.stderr) == [] and "absl" not in proc.stderr
    assert proc.stdout.strip()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(4, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="tiny",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = tmp_path_factory.mktemp("quiet") / "tiny.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return str(path)


def test_analyze_stderr_has_no_notices_unless_debug(tiny_model):
    quiet = _kstiff("analyze", tiny_model, "--per-class", "2", "--bins", "4")
    assert quiet.returncode == 0, quiet.stderr
    assert "Model: tiny" in quiet.stdout
    assert _notices(quiet.stderr) == [], quiet.stderr
    assert "InitializeLog" not in quiet.stderr and "cuInit" not in quiet.stderr
    # --debug lets TensorFlow print what it likes; dropping the notices from it gives the quiet stderr.
    loud = _kstiff("--debug", "analyze", tiny_model, "--per-class", "2", "--bins", "4")
    assert loud.returncode == 0, loud.stderr
    assert loud.stdout == quiet.stdout
    assert tf_quiet.drop_startup_notices(loud.stderr) == quiet.stderr
