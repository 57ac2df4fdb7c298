"""Overhead of StiffnessCallback on an MNIST-sized task, measured side by side in one run.

The paper's MLP (784-500-300-100-10, ReLU, Adam 1e-3, batch 32) on 60,000 synthetic 784-dimensional
examples of 10 classes (class means plus noise; no download). One epoch per fit, alternating fits
without and with the callback (500 probes: 50 per class; ``--held-out K`` adds K per class held out;
measured at fit start and at the epoch end, written to an HDF5 run file), after one warm-up epoch. Prints the median
epoch times and their ratio (what a user sees, but noisy on a shared machine), the ratio of this
process's CPU seconds (insensitive to other processes), and the callback's own time (its
``seconds``) against the epoch time.

Usage: python bench/callback_overhead.py [--repeats 7] [--examples 60000] [--held-out 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--held-out", type=int, default=0, help="held-out probes per class")
    parser.add_argument("--examples", type=int, default=60_000)
    args = parser.parse_args()

    import keras
    import numpy as np

    from keras_stiffness import ProbeSet, StiffnessCallback

    rng = np.random.default_rng(0)
    n, d, c = args.examples, 784, 10
    means = rng.normal(size=(c, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    x = (means[y] + 2.0 * rng.normal(size=(n, d))).astype(np.float32)
    x = (x - x.mean()) / x.std()
    y_val = rng.integers(0, c, 2000)
    x_val = ((means[y_val] + 2.0 * rng.normal(size=(2000, d))).astype(np.float32) - x.mean()) / x.std()

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((d,))]
        + [keras.layers.Dense(u, activation="relu") for u in (500, 300, 100)]
        + [keras.layers.Dense(c, activation="softmax")]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    if args.held_out:
        probes = ProbeSet(x, y, per_class=50, x_val=x_val, y_val=y_val, val_per_class=args.held_out)
    else:
        probes = ProbeSet(x, y, per_class=50)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # warm-up: tracing, allocator

    times = {"without": [], "with": []}
    cpu = {"without": [], "with": []}
    measure_counts, own_seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for kind in ("without", "with"):
                callbacks = []
                if kind == "with":
                    cb = StiffnessCallback(probes, os.path.join(tmp, f"run{r}.h5"))
                    callbacks = [cb]
                t0, c0 = time.perf_counter(), time.process_time()
                model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=callbacks)
                times[kind].append(time.perf_counter() - t0)
                cpu[kind].append(time.process_time() - c0)
                if kind == "with":
                    measure_counts.append(len(cb.measurements))
                    own_seconds.append(sum(cb.seconds))
    base = statistics.median(times["without"])
    with_cb = statistics.median(times["with"])
    # Each repeat runs the two fits back to back: their ratio is the least disturbed by slow phases of
    # a shared machine; the median over repeats drops the outliers.
    paired = statistics.median(w / o for w, o in zip(times["with"], times["without"]))
    print(
        f"examples {n}, batch 32, steps/epoch {n // 32}, probes {probes.n} "
        f"({probes.n_train} train + {probes.n_val} held out), measurements per fit {measure_counts[0]}"
    )
    print(f"epoch without callback: {base:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times['without'])})")
    print(f"epoch with callback:    {with_cb:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times['with'])})")
    own = statistics.median(own_seconds)
    cpu_ratio = statistics.median(w / o for w, o in zip(cpu["with"], cpu["without"]))
    print(
        f"CPU seconds of this process per fit, without: {statistics.median(cpu['without']):.2f}, "
        f"with: {statistics.median(cpu['with']):.2f}; paired ratio {cpu_ratio:.3f} "
        "(insensitive to time taken by other processes)"
    )
    print(
        f"ratio with/without: {paired:.3f} (median of the {args.repeats} paired ratios; "
        f"overhead {100 * (paired - 1):+.1f}%; acceptance: at most +5%)"
    )
    print(
        f"callback's own time per fit: {own:.3f} s = {100 * own / base:.1f}% of the epoch without it "
        f"({own / measure_counts[0]:.3f} s per measurement)"
    )


if __name__ == "__main__":
    main()
