"""Gram engine benchmark: structured rules vs the whole-model jacobian, measured side by side.

Same probes for every method in one run:

1. the paper's MLP (784-500-300-100-10, ReLU, softmax cross-entropy) at N = 1000: structured vs
   ``method="jacobian"`` time, their ratio and the relative Frobenius error between them;
2. the paper's CNN (3×3 convolutions with 16/32/32 channels, each followed by 2×2 max pooling, then a
   dense layer to 10; 32×32×3 input) at N = 500: the same;
3. the structured time over one plain forward + backward pass (``tf.GradientTape``, summed loss,
   gradient with respect to the trainable variables) on the same probes: how close to the floor;
4. the MLP at N = 10,000, structured, in a child process: time and the child's peak RSS;
5. the models people train now, each in its own process (``bench/transformer_probe.py``: a 2-block
   transformer classifier, and ``bench/lstm_probe.py``: Embedding → LSTM → Dense; T = 32, N = 256):
   ``gradient_gram(method="auto")`` time, its ratio to one plain forward + backward of the same probes,
   and peak RSS (targets: ≤ 5× and ≤ 2 GiB).

Data are synthetic standard-normal inputs with random labels (nothing is downloaded). The fast paths
are timed as the median of a few repeats after two warm-up calls (the first eager, the second
compiling: ``bench_common.WARMUPS``); the jacobian once.

Usage:
    python bench/gram_bench.py            # full sizes
    python bench/gram_bench.py --quick    # smaller N, same table
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bench_common  # noqa: E402
import numpy as np  # noqa: E402

FLOORS = {"mlp_speedup": 100.0, "cnn_speedup": 10.0, "peak_gib": 8.0}
REPEATS = 3
SEED = 0


def build_mlp():
    """The paper's fully connected net on flattened 28×28 inputs (logits out)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(SEED)
    return keras.Sequential(
        [
            keras.Input((784,)),
            L.Dense(500, activation="relu"),
            L.Dense(300, activation="relu"),
            L.Dense(100, activation="relu"),
            L.Dense(10),
        ],
        name="paper_mlp",
    )


def build_cnn():
    """The paper's CNN: three 3×3 convolutions (16, 32, 32), each followed by 2×2 max pooling."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(SEED)
    stack = [keras.Input((32, 32, 3))]
    for filters in (16, 32, 32):
        stack += [L.Conv2D(filters, 3, padding="same", activation="relu"), L.MaxPooling2D(2)]
    return keras.Sequential([*stack, L.Flatten(), L.Dense(10)], name="paper_cnn")


def probes(shape, n, classes=10):
    rng = np.random.default_rng(SEED)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def loss_fn():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median_time(fn, repeats=REPEATS):
    """Median wall time of ``repeats`` calls after the warm-ups (``bench_common.WARMUPS``); also the last result."""
    for _ in range(bench_common.WARMUPS):
        fn()
    times, out = [], None
    for _ in range(repeats):
        t, out = timed(fn)
        times.append(t)
    return statistics.median(times), out


def forward_backward(model, x, y, chunk=1024):
    """One plain pass: summed loss, gradient with respect to every trainable variable."""
    import tensorflow as tf

    loss = loss_fn()
    variables = model.trainable_variables
    for lo in range(0, len(x), chunk):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(loss.call(y[lo : lo + chunk], model(x[lo : lo + chunk], training=False)))
        grads = tape.gradient(total, variables)
        _ = [g.numpy() for g in grads]


def compare(name, build, shape, n):
    """Structured vs jacobian vs the forward/backward floor on one model."""
    from keras_stiffness import gradient_gram

    model = build()
    x, y = probes(shape, n)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    t_struct, fast = median_time(lambda: gradient_gram(model, x, y, loss=loss_fn(), method="structured"))
    t_floor, _ = median_time(lambda: forward_backward(model, x, y))
    t_jac, ref = timed(lambda: gradient_gram(model, x, y, loss=loss_fn(), method="jacobian"))
    err = float(np.linalg.norm(fast.total - ref.total) / np.linalg.norm(ref.total))
    return {
        "name": name,
        "n": n,
        "params": params,
        "structured": t_struct,
        "jacobian": t_jac,
        "floor": t_floor,
        "speedup": t_jac / t_struct,
        "over_floor": t_struct / t_floor,
        "error": err,
    }


def child_large(n):
    """Run only the large structured MLP (in the child process) and print its time."""
    from keras_stiffness import gradient_gram

    model = build_mlp()
    x, y = probes((784,), n)
    t, result = timed(lambda: gradient_gram(model, x, y, loss=loss_fn(), method="structured"))
    print(f"{t:.6f} {result.total.shape[0]}")


def large(n):
    """Time and peak RSS of the structured MLP at ``n`` probes, in a fresh child process."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child-large", str(n)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    seconds, rows = proc.stdout.split()[-2:]
    return {"n": int(rows), "seconds": float(seconds), "peak_gib": peak_kib / 2**20}


def report(rows, big, quick):
    import keras
    import tensorflow as tf

    print(f"keras_stiffness gram benchmark{'  (--quick: reduced N; floors apply to full sizes)' if quick else ''}")
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), {platform.machine()}"
    )
    warm = bench_common.WARMUPS
    print(f"timing: median of {REPEATS} after {warm} warm-up calls (structured, floor); jacobian: one run\n")
    head = (
        f"{'model':<10}{'N':>6}{'params':>9}{'structured s':>14}{'jacobian s':>12}{'speedup':>9}"
        f"{'fwd+bwd s':>11}{'struct/floor':>14}{'rel. error':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['name']:<10}{r['n']:>6}{r['params']:>9}{r['structured']:>14.3f}{r['jacobian']:>12.2f}"
            f"{r['speedup']:>8.0f}x{r['floor']:>11.3f}{r['over_floor']:>13.1f}x{r['error']:>12.1e}"
        )
    print(
        f"\nMLP structured at N = {big['n']}: {big['seconds']:.2f} s, peak RSS {big['peak_gib']:.2f} GiB "
        "(child process)"
    )
    mlp, cnn = rows
    checks = [
        (
            f"MLP speedup >= {FLOORS['mlp_speedup']:.0f}x",
            mlp["speedup"] >= FLOORS["mlp_speedup"],
            f"{mlp['speedup']:.0f}x",
        ),
        (
            f"CNN speedup >= {FLOORS['cnn_speedup']:.0f}x",
            cnn["speedup"] >= FLOORS["cnn_speedup"],
            f"{cnn['speedup']:.0f}x",
        ),
        (
            f"MLP N={big['n']} peak < {FLOORS['peak_gib']:.0f} GiB",
            big["peak_gib"] < FLOORS["peak_gib"],
            f"{big['peak_gib']:.2f} GiB",
        ),
        (
            "structured == jacobian (rel. error < 1e-5)",
            max(mlp["error"], cnn["error"]) < 1e-5,
            f"{max(mlp['error'], cnn['error']):.1e}",
        ),
    ]
    print("\nacceptance floors")
    for label, ok, value in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label:<45} measured {value}")


def modern():
    """Run the transformer and LSTM probes, each in a fresh process, and relay what they print."""
    here = os.path.dirname(os.path.abspath(__file__))
    for script in ("transformer_probe.py", "lstm_probe.py"):
        print(f"\n{script}")
        proc = subprocess.run([sys.executable, os.path.join(here, script)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        for line in proc.stdout.splitlines():
            print(f"  {line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N (200 / 100 / 2000)")
    parser.add_argument("--no-modern", action="store_true", help="skip the transformer and LSTM probes")
    parser.add_argument("--child-large", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_large is not None:
        child_large(args.child_large)
        return
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # pfor's retracing notices are expected: one trace per chunk
    n_mlp, n_cnn, n_big = (200, 100, 2000) if args.quick else (1000, 500, 10_000)
    big = large(n_big)  # first, so the child's peak is not mixed with anything else
    rows = [compare("mlp", build_mlp, (784,), n_mlp), compare("cnn", build_cnn, (32, 32, 3), n_cnn)]
    report(rows, big, args.quick)
    if not args.no_modern:
        modern()


if __name__ == "__main__":
    main()
