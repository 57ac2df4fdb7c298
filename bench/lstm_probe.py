"""LSTM probe benchmark: ``gradient_gram(method="auto")`` against one plain forward + backward pass.

The model of the issue: ``Embedding(2000, 64) → LSTM(64) → Dense(4)`` on token sequences of length
T = 32, N = 256 probes, sparse categorical cross-entropy on logits. Printed:

- ``gradient_gram`` time (median of 3 after two warm-up calls, see ``bench_common.WARMUPS``) and
  the rule each layer used,
- one forward + backward pass of the same probes (``tf.GradientTape``, summed loss, gradient with
  respect to the trainable variables; median of 3 after two warm-up calls),
- their ratio, and the process's peak RSS (``VmHWM``, see ``bench/bench_common.py``).

Targets (from the issue): ratio ≤ 5×, peak RSS ≤ 2 GiB.

Usage:
    python bench/lstm_probe.py            # the issue's sizes
    python bench/lstm_probe.py --profile  # also time the capture pass and each layer's Gram rule
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bench_common  # noqa: E402

VOCAB, WIDTH, UNITS, CLASSES = 2000, 64, 64, 4
T, N, REPEATS, SEED = 32, 256, 3, 0
TARGETS = {"ratio": 5.0, "peak_gib": 2.0}


def build_model():
    """``Embedding(2000, 64) → LSTM(64) → Dense(4)`` (logits), seeded."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(SEED)
    return keras.Sequential(
        [
            keras.Input((T,), dtype="int32"),
            L.Embedding(VOCAB, WIDTH, name="embed"),
            L.LSTM(UNITS, name="lstm"),
            L.Dense(CLASSES, name="head"),
        ],
        name="lstm_probe",
    )


def probes():
    """``N`` token sequences of length ``T`` and their labels."""
    return bench_common.token_probes(N, T, VOCAB, CLASSES, SEED)


loss_fn = bench_common.logits_loss


def median_time(fn, repeats=REPEATS):
    """Median wall and CPU time of ``repeats`` calls after the warm-ups, and the last result."""
    return bench_common.median_time(fn, repeats)


def forward_backward(model, x, y):
    """One plain pass: summed loss, gradient with respect to every trainable variable."""
    return bench_common.forward_backward(model, x, y, loss_fn())


def profile(model, x, y):
    """Wall and CPU time of the steps of ``gradient_gram`` (one run after the timed ones)."""
    from keras_stiffness.engine.capture import capture
    from keras_stiffness.engine.losses import resolve_loss
    from keras_stiffness.engine.units import model_units

    units = model_units(model)
    per_example_loss, _ = resolve_loss(model, loss_fn())

    def timed(label, fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        print(f"  {label:<46} {time.perf_counter() - start:.3f} s  (CPU {time.process_time() - start_cpu:.3f} s)")
        return out

    timed("shape probe model(x[:2]) (Keras' own layers)", lambda: model(x[:2], training=False))
    captures, _, _ = timed(
        "capture pass (forward + backward + to host)",
        lambda: capture(model, units, x, y, per_example_loss, chunk_size=1024),
    )
    for unit in units:
        if unit.rule is not None and unit.name in captures:
            timed(f"gram of {unit.name} ({unit.rule.name})", lambda u=unit: u.rule.gram(u.layer, captures[u.name]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="time the capture pass and each rule")
    args = parser.parse_args()

    import tensorflow as tf

    from keras_stiffness import gradient_gram

    model = build_model()
    x, y = probes()
    t_gram, cpu_gram, result = median_time(lambda: gradient_gram(model, x, y, loss=loss_fn(), method="auto"))
    t_floor, cpu_floor, _ = median_time(lambda: forward_backward(model, x, y))
    peak_gib = bench_common.peak_rss_kib() / 2**20  # KiB on Linux
    ratio = t_gram / t_floor
    print(f"Embedding({VOCAB}, {WIDTH}) → LSTM({UNITS}) → Dense({CLASSES}), T={T}, N={N}")
    warm = bench_common.WARMUPS
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s); median of {REPEATS} after {warm} warm-up calls")
    print(f"rules: {result.rules} (method {result.method})")
    print(f"gradient_gram:      {t_gram:.3f} s  (CPU {cpu_gram:.3f} s)")
    print(f"forward + backward: {t_floor:.3f} s  (CPU {cpu_floor:.3f} s)")
    print(f"ratio:              {ratio:.1f}x  (CPU time {cpu_gram / cpu_floor:.1f}x; target ≤ {TARGETS['ratio']:.0f}x)")
    print(f"peak RSS:           {peak_gib:.2f} GiB  (target ≤ {TARGETS['peak_gib']:.0f} GiB)")
    if args.profile:
        profile(model, x, y)
    ok = ratio <= TARGETS["ratio"] and peak_gib <= TARGETS["peak_gib"]
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
