"""Transformer probe benchmark: ``gradient_gram(method="auto")`` against one plain forward + backward pass.

The model of the issue: ``Embedding(2000, 64)``, then twice ``MultiHeadAttention(4 heads × key_dim 16)
+ residual → LayerNormalization → Dense(128, relu) → Dense(64) + residual → LayerNormalization``, then
``GlobalAveragePooling1D → Dense(4)`` (logits), on token sequences of length T = 32, N = 256 probes,
sparse categorical cross-entropy. Printed:

- ``gradient_gram`` time (median of 3 after two warm-up calls, see ``bench_common.WARMUPS``) and
  the rule each layer used,
- one forward + backward pass of the same probes (``tf.GradientTape``, summed loss, gradient with
  respect to the trainable variables; median of 3 after two warm-up calls),
- their ratio, and peak RSS (``VmHWM``, see ``bench/bench_common.py``) of a fresh process that runs
  ``gradient_gram`` only (the engine's own peak) and of this process (both measurements).

Targets (from the issue): ratio ≤ 5×, peak RSS ≤ 2 GiB.

Usage:
    python bench/transformer_probe.py            # the issue's sizes
    python bench/transformer_probe.py --profile  # also time the capture pass and each layer's Gram rule
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bench_common  # noqa: E402
import numpy as np

VOCAB, WIDTH, HEADS, KEY_DIM, FFN, CLASSES, BLOCKS = 2000, 64, 4, 16, 128, 4, 2
T, N, REPEATS, SEED = 32, 256, 3, 0
TARGETS = {"ratio": 5.0, "peak_gib": 2.0}


def build_model():
    """The issue's two-block transformer classifier (logits), seeded."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(SEED)
    inp = keras.Input((T,), dtype="int32")
    h = L.Embedding(VOCAB, WIDTH, name="embed")(inp)
    for b in range(BLOCKS):
        a = L.MultiHeadAttention(HEADS, KEY_DIM, name=f"mha{b}")(h, h)
        h = L.LayerNormalization(name=f"ln{b}a")(L.Add()([h, a]))
        f = L.Dense(FFN, activation="relu", name=f"ffn{b}_in")(h)
        f = L.Dense(WIDTH, name=f"ffn{b}_out")(f)
        h = L.LayerNormalization(name=f"ln{b}b")(L.Add()([h, f]))
    out = L.Dense(CLASSES, name="head")(L.GlobalAveragePooling1D()(h))
    return keras.Model(inp, out, name="transformer_probe")


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
    """Time of the capture pass and of each unit's Gram rule (one run after the timed ones)."""
    from keras_stiffness.engine.capture import capture
    from keras_stiffness.engine.losses import resolve_loss
    from keras_stiffness.engine.units import model_units

    units = model_units(model)
    per_example_loss, _ = resolve_loss(model, loss_fn())
    start = time.perf_counter()
    captures, _, _ = capture(model, units, x, y, per_example_loss, chunk_size=1024)
    print(f"  capture pass (forward + backward + to host): {time.perf_counter() - start:.3f} s")
    total = 0.0
    for unit in units:
        if unit.rule is None or unit.name not in captures:
            continue
        start = time.perf_counter()
        unit.rule.gram(unit.layer, captures[unit.name])
        took = time.perf_counter() - start
        total += took
        print(f"  gram of {unit.name:<17} ({unit.rule.name}): {took:.3f} s")
    print(f"  all Gram rules: {total:.3f} s")


def child_peak():
    """In a fresh process: one ``gradient_gram`` only; prints its time and the process's peak RSS."""
    from keras_stiffness import gradient_gram

    model = build_model()
    x, y = probes()
    start = time.perf_counter()
    gradient_gram(model, x, y, loss=loss_fn(), method="auto")
    seconds = time.perf_counter() - start
    print(f"{seconds:.6f} {bench_common.peak_rss_kib()}")


def engine_peak_gib() -> tuple:
    """``(seconds, peak GiB)`` of :func:`child_peak` run as a fresh process."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    seconds, kib = proc.stdout.split()[-2:]
    return float(seconds), int(kib) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="time the capture pass and each rule")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_peak()
        return

    import tensorflow as tf

    from keras_stiffness import gradient_gram

    first_seconds, child_gib = engine_peak_gib()
    model = build_model()
    x, y = probes()
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    t_gram, cpu_gram, result = median_time(lambda: gradient_gram(model, x, y, loss=loss_fn(), method="auto"))
    t_floor, cpu_floor, _ = median_time(lambda: forward_backward(model, x, y))
    peak_gib = bench_common.peak_rss_kib() / 2**20  # KiB on Linux
    ratio = t_gram / t_floor
    print(
        f"Embedding({VOCAB}, {WIDTH}) → {BLOCKS} × (MHA {HEADS}×{KEY_DIM}, LayerNorm, Dense {FFN}-{WIDTH}, "
        f"LayerNorm) → pooling → Dense({CLASSES}); {params} weights, T={T}, N={N}"
    )
    warm = bench_common.WARMUPS
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s); median of {REPEATS} after {warm} warm-up calls")
    print(f"rules: {sorted(set(result.rules.values()))} (method {result.method})")
    print(f"gradient_gram:      {t_gram:.3f} s  (CPU {cpu_gram:.3f} s; first call, new process {first_seconds:.2f} s)")
    print(f"forward + backward: {t_floor:.3f} s  (CPU {cpu_floor:.3f} s)")
    print(f"ratio:              {ratio:.1f}x  (CPU time {cpu_gram / cpu_floor:.1f}x; target ≤ {TARGETS['ratio']:.0f}x)")
    print(f"peak RSS:           {child_gib:.2f} GiB (gradient_gram alone, fresh process), {peak_gib:.2f} GiB here")
    print(f"                    (target ≤ {TARGETS['peak_gib']:.0f} GiB)")
    if args.profile:
        profile(model, x, y)
    ok = ratio <= TARGETS["ratio"] and max(peak_gib, child_gib) <= TARGETS["peak_gib"]
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
