"""What the benchmark scripts share: peak memory as a user sees it, medians of timed calls, and one
plain forward + backward pass (the floor a Gram computation is compared with)."""

from __future__ import annotations

import resource
import statistics
import time


def peak_rss_kib() -> int:
    """Peak RSS in KiB, as ``/usr/bin/time -f %M`` reports it.

    ``getrusage(...).ru_maxrss`` is inherited across ``fork`` and kept across ``exec`` on Linux, so a
    benchmark started by another Python process would report its parent's peak; the kernel's ``VmHWM``
    (high-water mark of this process's own address space) starts afresh at ``exec``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            lines = status.readlines()
    except OSError:  # not Linux: the rusage figure (not reset at exec) is the best there is
        lines = []
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def token_probes(n: int, length: int, vocab: int, classes: int, seed: int):
    """``n`` random token sequences of ``length`` ids below ``vocab``, and random labels below ``classes``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, (n, length)).astype(np.int32), rng.integers(0, classes, n)


def logits_loss():
    """Sparse categorical cross-entropy on logits (the probes' models end in a linear head)."""
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


#: Warm-up calls before timing: a model's first Gram runs eagerly and its second compiles the capture
#: pass and product graph (``keras_stiffness.engine.traced``); the timed calls are the steady state.
WARMUPS = 2


def median_time(fn, repeats: int, warmups: int = WARMUPS):
    """Median wall and CPU time of ``repeats`` calls after ``warmups`` calls, and the last result.

    The CPU time (all threads of the process) varies less with the load of a shared machine.
    """
    for _ in range(warmups):
        out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), out


def forward_backward(model, x, y, loss):
    """One plain pass: summed ``loss``, gradient with respect to every trainable variable."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        total = tf.reduce_sum(loss.call(y, model(x, training=False)))
    grads = tape.gradient(total, model.trainable_variables)
    return [(g.values if isinstance(g, tf.IndexedSlices) else g).numpy() for g in grads]
