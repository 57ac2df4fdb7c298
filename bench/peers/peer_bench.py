"""Peer benchmark: ``keras_stiffness.gradient_gram`` vs neural-tangents' structured empirical NTK.

Both compute the same (N, N) matrix ``G_ij = g_i · g_j`` of per-example loss gradients over all weights,
on the same network with the same weights and probes:

1. the paper's MLP (``paper_mlp``: 784-500-300-100-10, ReLU, softmax) at N = 1000;
2. the paper's CNN (``paper_cnn``: 3×3 convolutions 16/32/32, "same" padding, ReLU, each followed by
   2×2 max pooling with "same" padding; Flatten; Dense softmax) on 28×28×1 inputs at N = 500.

This script runs in the project venv (TensorFlow, Keras 3, numpy 2). It builds the models, times
``gradient_gram(model, x, y, method="auto")`` (median of ``--repeats`` after two warm-up calls: the
first runs eagerly, the second compiles, see ``OUR_WARMUPS``) and
``method="jacobian"`` once, saves weights and probes to a temporary ``.npz``, then runs ``nt_side.py``
with the peer venv's python (jax 0.4.23 needs numpy<2, so the two cannot share a process). That side
rebuilds the network in JAX, makes the per-example loss the function's output (labels concatenated to
the inputs), times the jitted ``nt.empirical_ntk_fn(..., trace_axes=(), vmap_axes=0,
implementation=STRUCTURED_DERIVATIVES)`` the same way (warm-up excluded, ``block_until_ready``) and
writes its Gram back. The two Grams are compared by relative Frobenius difference.

Data are synthetic: standard-normal inputs, uniform random labels 0..9, seeded (nothing is downloaded).

Usage (``make peers`` builds bench/peers/.venv and runs this):
    python bench/peers/peer_bench.py --peer-python bench/peers/.venv/bin/python
    python bench/peers/peer_bench.py --quick          # N = 200 / 100, fewer repeats, for a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_PEER_PYTHON = os.path.join(HERE, ".venv", "bin", "python")
SEED = 0
N_CLASSES = 10
TOLERANCE = 1e-4  # relative Frobenius difference allowed between the two float32 computations

# name, builder in keras_stiffness.app.models, Keras input shape, full N, quick N
MODELS = {
    "mlp": ("paper_mlp", (784,), 1000, 200),
    "cnn": ("paper_cnn", (28, 28, 1), 500, 100),
}


def build(arch: str):
    """The project's own paper model, seeded and compiled with sparse categorical cross-entropy."""
    import keras

    from keras_stiffness.app import models

    builder, shape, _, _ = MODELS[arch]
    keras.utils.set_random_seed(SEED)
    model = getattr(models, builder)(shape, N_CLASSES)
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def probes(shape: tuple, n: int):
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, n)
    return x, y


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


#: Warm-up calls on our side: the first runs eagerly, the second compiles the model's capture pass and
#: product graph (``keras_stiffness.engine.traced``); neural-tangents' jit compiles on its first call.
OUR_WARMUPS = 2


def median_time(fn, repeats: int, warmups: int = 1):
    """Median wall time of ``repeats`` calls after ``warmups`` calls, all the times, the last result,
    and the warm-up times."""
    warm = [timed(fn)[0] for _ in range(warmups)]
    times, out = [], None
    for _ in range(repeats):
        t, out = timed(fn)
        times.append(t)
    return statistics.median(times), times, out, warm


def rel_diff(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def run_nt(peer_python: str, model, x, y, arch: str, repeats: int, workdir: str):
    """Save weights and probes, run nt_side.py in the peer venv, load its Gram, times and losses."""
    inp = os.path.join(workdir, f"{arch}_in.npz")
    out = os.path.join(workdir, f"{arch}_out.npz")
    weights = [v.numpy() for v in model.trainable_variables]
    np.savez(
        inp,
        arch=arch,
        input_shape=np.asarray(x.shape[1:]),
        x=x.reshape(len(x), -1),
        onehot=np.eye(N_CLASSES, dtype=np.float32)[y],
        n_weights=len(weights),
        **{f"w{k}": w for k, w in enumerate(weights)},
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    cmd = [peer_python, os.path.join(HERE, "nt_side.py"), inp, out, "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"nt_side.py failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    with np.load(out) as res:
        return {
            "gram": res["gram"],
            "times": res["times"],
            "losses": res["losses"],
            "info": json.loads(str(res["info"])),
            "log": proc.stdout.strip(),
        }


def compare(arch: str, n: int, repeats: int, peer_python: str, jacobian: bool, workdir: str) -> dict:
    from keras_stiffness import gradient_gram

    model = build(arch)
    x, y = probes(MODELS[arch][1], n)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)

    t_ours, ours_times, ours, warm = median_time(
        lambda: gradient_gram(model, x, y, method="auto"), repeats, warmups=OUR_WARMUPS
    )
    row = {
        "arch": arch,
        "n": n,
        "params": params,
        "ours": t_ours,
        "ours_times": ours_times,
        "ours_warmups": warm,
        "method": ours.method,
        "rules": sorted(set(ours.rules.values())),
    }
    if jacobian:
        t_jac, ref = timed(lambda: gradient_gram(model, x, y, method="jacobian"))
        row.update(jacobian=t_jac, ours_vs_jacobian=rel_diff(ours.total, ref.total))

    nt_res = run_nt(peer_python, model, x, y, arch, repeats, workdir)
    t_nt = statistics.median(nt_res["times"].tolist())
    row.update(
        nt=t_nt,
        nt_times=nt_res["times"].tolist(),
        nt_first=nt_res["info"]["first_call_s"],
        ratio=t_nt / t_ours,
        diff=rel_diff(nt_res["gram"].astype(np.float64), ours.total),
        loss_diff=float(np.max(np.abs(nt_res["losses"].reshape(-1) - ours.losses.reshape(-1)))),
        clipped=nt_res["info"]["clipped_fraction"],
        info=nt_res["info"],
    )
    if jacobian:
        row["nt_vs_jacobian"] = rel_diff(nt_res["gram"].astype(np.float64), ref.total)
    return row


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "keras_stiffness"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{head}{' (keras_stiffness/ has uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(rows: list, repeats: int, jacobian: bool, load_before: float) -> bool:
    import keras
    import tensorflow as tf

    import keras_stiffness

    info = rows[0]["info"]
    print("keras_stiffness vs neural-tangents: per-example loss-gradient Gram, same weights and probes")
    print(f"date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}, tree {git_state()}")
    print(
        f"ours: keras_stiffness {keras_stiffness.__version__}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, NumPy {np.__version__}"
    )
    print(
        f"peer: neural-tangents {info['neural_tangents']}, jax {info['jax']}, jaxlib {info['jaxlib']}, "
        f"NumPy {info['numpy']}, device {info['device']}"
    )
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), {platform.machine()}; 1-min load average "
        f"{load_before:.2f} before the run (> ~0.5: other work shared the cores), {os.getloadavg()[0]:.2f} after"
    )
    print(
        f"timing: median of {repeats}, after {OUR_WARMUPS} warm-up calls here (eager, then compiling) and one "
        "there (jit compiling); gradient_gram method='auto'; "
        "NT: jitted STRUCTURED_DERIVATIVES, trace_axes=(), vmap_axes=0, block_until_ready\n"
    )
    head = (
        f"{'model':<6}{'N':>6}{'params':>9}{'ours s':>9}{'NT struct s':>13}{'NT/ours':>9}"
        f"{'rel. diff':>11}{'max |dL|':>10}"
    )
    if jacobian:
        head += f"{'ours jac s':>12}{'jac/ours':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (
            f"{r['arch']:<6}{r['n']:>6}{r['params']:>9}{r['ours']:>9.3f}{r['nt']:>13.3f}{r['ratio']:>8.2f}x"
            f"{r['diff']:>11.1e}{r['loss_diff']:>10.1e}"
        )
        if jacobian:
            line += f"{r['jacobian']:>12.2f}{r['jacobian'] / r['ours']:>9.0f}x"
        print(line)
    print()
    for r in rows:
        print(
            f"{r['arch']}: ours {', '.join(f'{t:.3f}' for t in r['ours_times'])} s "
            f"(warm-ups {', '.join(f'{t:.3f}' for t in r['ours_warmups'])} s; "
            f"method {r['method']}, rules {', '.join(r['rules'])}); "
            f"NT {', '.join(f'{t:.3f}' for t in r['nt_times'])} s (first call with compile {r['nt_first']:.2f} s)"
        )
        extra = f"probabilities clipped on the NT side: {r['clipped']:.1e}"
        if jacobian:
            extra = (
                f"ours auto vs ours jacobian {r['ours_vs_jacobian']:.1e}, "
                f"NT vs ours jacobian {r['nt_vs_jacobian']:.1e}; " + extra
            )
        print(f"  {extra}")
    ok = all(r["diff"] < TOLERANCE for r in rows)
    print(f"\nvalue check (rel. Frobenius diff < {TOLERANCE:.0e} on every model): {'PASS' if ok else 'FAIL'}")
    print("NT/ours > 1: gradient_gram is faster; < 1: neural-tangents is faster.")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON, help="python of the peer venv")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (default 5)")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--no-jacobian", action="store_true", help="skip the method='jacobian' reference")
    parser.add_argument("--quick", action="store_true", help="N = 200 / 100 and 3 repeats (smoke run)")
    args = parser.parse_args(argv)
    if not os.path.exists(args.peer_python):
        parser.error(f"no peer python at {args.peer_python}; run `make peers` to build bench/peers/.venv")
    repeats = 3 if args.quick else args.repeats
    if repeats < 1:
        parser.error("--repeats must be at least 1")

    load_before = os.getloadavg()[0]
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    rows = []
    with tempfile.TemporaryDirectory(prefix="peer_bench_") as workdir:
        for arch in args.models.split(","):
            arch = arch.strip()
            if arch not in MODELS:
                parser.error(f"unknown model {arch!r}; expected one of {sorted(MODELS)}")
            n = MODELS[arch][3 if args.quick else 2]
            rows.append(compare(arch, n, repeats, args.peer_python, not args.no_jacobian, workdir))
    return 0 if report(rows, repeats, not args.no_jacobian, load_before) else 1


if __name__ == "__main__":
    sys.exit(main())
