"""Scale benchmark: the streamed measurement at large N, in bounded memory, against the whole-matrix path.

Every case runs in a fresh child process, so one case's memory never shows in another's; peak memory is
the child's own peak RSS read at its end (``VmHWM``, what ``/usr/bin/time -f %M`` reports; see
``bench_common.peak_rss_kib``). Times are wall seconds of the measured call alone (model built, probes
drawn and TensorFlow imported before the clock starts), with the CPU seconds of the process beside them.

Cases, in the order they run:

1. the paper's MLP (``app.models.paper_mlp((784,), 10)``: Flatten, Dense 500-300-100 ReLU, Dense 10
   softmax, 573,910 weights) at N = 20,000: ``measure(KerasAdapter(model), probes, MeasureConfig())`` at
   the default memory budget (sign and cos, distance curves in every space). Targets: peak < 3 GiB and
   time <= 1.2x the whole-matrix path (case 4);
2. the same at N = 50,000: completes, peak < 4 GiB;
3. ``keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=10)`` at N = 2048,
   default config: completes, peak < 6 GiB. When it takes longer than ``--slow`` seconds (default
   20 min) or is stopped at ``--resnet-timeout``, it is run again with ``MeasureConfig(layers="none")``
   (distance curves in input space only) and both are reported;
5. the capture-cache decision, for the MLP and ResNet50V2 at one block of the size their plan chose:
   (a) recomputing the block's capture (``Prepared.capture_block``) against (b) spilling every array
   of the capture to a temporary file (``np.save``, fsync'd) and reading it back (``np.load``), read
   both from the page cache and cold (pages dropped with ``posix_fadvise(DONTNEED)``);
4. last, the whole-matrix path the streamed one replaces, on case 1's probes:
   ``gradient_gram(model, x, y, block_size=N)`` (one block: the whole ``(N, N)`` matrices), then
   ``adapter.representations`` and ``math.summarize.summarize`` on the whole matrices (as
   ``tests/test_measure_blocks.py::whole_matrix_measurement`` does). It needs several ``(N, N)``
   float64 matrices (~16 GiB and more at N = 20,000), so its child runs under
   ``RLIMIT_AS`` (``--whole-limit-gib``, default 20 GiB, never more than the memory available minus
   1.5 GiB) and fails cleanly rather than take the machine down; ``--no-baseline`` skips it. The
   streamed/whole ratios of time and memory are printed, and a few summaries of both side by side.

Probes are synthetic and seeded (nothing is downloaded): standard-normal float32 inputs, balanced
labels 0..9, ``ProbeSet(x, y, per_class=N // 10, seed=0)`` (every example taken; no held-out part).
Weights are Keras' seeded initializations (untrained).

Usage:
    .venv/bin/python bench/scale_bench.py                  # full sizes (N = 20,000 / 50,000 / 2048); long
    .venv/bin/python bench/scale_bench.py --quick          # N = 2,000 / 5,000 / 192: under 3 minutes
    .venv/bin/python bench/scale_bench.py --no-baseline    # skip the whole-matrix path (case 4)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import peak_rss_kib  # noqa: E402

GIB = 2**30
SEED = 0
CLASSES = 10
SHAPES = {"mlp": (784,), "resnet50v2": (32, 32, 3)}
FULL = {"mlp": 20_000, "mlp_large": 50_000, "resnet": 2048}
QUICK = {"mlp": 2_000, "mlp_large": 5_000, "resnet": 192}
TARGET_GIB = {"mlp": 3.0, "mlp_large": 4.0, "resnet": 6.0}
TIME_RATIO = 1.2
#: N at which the streamed and whole-matrix paths are compared again when the whole one fails at case 1's N.
FALLBACK_N = 14_000
RESULT = "RESULT "
PLAN = "PLAN "


# ----------------------------------------------------------------------------------------------- child


def build(name):
    """The model of a case, seeded and compiled with sparse categorical cross-entropy (softmax outputs)."""
    import keras

    keras.utils.set_random_seed(SEED)
    if name == "mlp":
        from keras_stiffness.app.models import paper_mlp

        model = paper_mlp(SHAPES["mlp"], CLASSES)
    elif name == "resnet50v2":
        model = keras.applications.ResNet50V2(weights=None, input_shape=SHAPES["resnet50v2"], classes=CLASSES)
    else:
        raise ValueError(f"unknown model {name!r}")
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def make_probes(name, n):
    """``n`` standard-normal inputs with balanced labels, all taken as probes (seeded)."""
    import numpy as np

    from keras_stiffness.data.probes import ProbeSet

    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((n, *SHAPES[name]), dtype=np.float32)
    y = rng.permutation(np.arange(n) % CLASSES)
    return ProbeSet(x, y, per_class=n // CLASSES, seed=SEED)


def log(label, text):
    print(f"  [{label}] {text}", file=sys.stderr, flush=True)


def rss_gib():
    """The current RSS in GiB (``VmRSS``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


class Terminated(BaseException):
    """SIGTERM reached a child (a timeout, or someone stopping it): report what was done."""


#: The running case's progress recorder, for a partial report when the child is stopped.
RECORDER = None
#: Why the child was asked to stop (set by its SIGTERM handler), or None.
STOP = {"reason": None}


class Recorder:
    """``progress(done, total)``: keeps the time and RSS at every block, logs a line every ``every`` seconds."""

    def __init__(self, label, every=60.0):
        global RECORDER
        self.label, self.every = label, every
        self.times = []  # (done, total, seconds since start, RSS GiB)
        self.start = time.perf_counter()
        self._last = -float("inf")
        RECORDER = self

    def __call__(self, done, total):
        if STOP["reason"] is not None:  # stop here, between blocks: the library cleans up as on any error
            raise Terminated(STOP["reason"])
        now = time.perf_counter() - self.start
        rss = rss_gib()
        self.times.append((done, total, now, rss))
        if now - self._last >= self.every or done == total:
            self._last = now
            left = f", ~{now * (total - done) / done:.0f} s left" if 0 < done < total else ""
            log(self.label, f"{done}/{total} blocks, {now:.0f} s{left}, RSS {rss:.2f} GiB")

    def partial(self):
        """Where the measurement was when it stopped."""
        if not self.times:
            return {}
        done, total, t, rss = self.times[-1]
        mid_done, _, mid_t, _ = self.times[len(self.times) // 2]
        rate = (t - mid_t) / (done - mid_done) if done > mid_done else float("nan")  # recent seconds per block
        return {
            "done": done,
            "total": total,
            "seconds": t,
            "recent_s_per_block": rate,
            "projected": t + rate * (total - done),
            "rss_trace": self.rss_trace(),
        }

    def rss_trace(self, points=8):
        """RSS at a few evenly spaced blocks: ``[(done, GiB), ...]``."""
        step = max(1, len(self.times) // points)
        picked = self.times[::step] + ([self.times[-1]] if (len(self.times) - 1) % step else [])
        return [(d, round(r, 2)) for d, _, _, r in picked]

    def phases(self, diagonal_blocks, seconds):
        """Seconds before the first block, in the diagonal (norms) pass, in the pairs pass, and after."""
        if not self.times:
            return {}
        at = {done: t for done, _, t, _ in self.times}
        first = at.get(0, self.times[0][2])
        norms = at.get(diagonal_blocks, first)
        last = self.times[-1][2]
        pairs = len(self.times) - 1 - diagonal_blocks
        return {
            "setup": first,
            "diagonal": norms - first,
            "pairs": last - norms,
            "after": seconds - last,
            "pair_blocks": pairs,
            "rss_trace": self.rss_trace(),
        }


def scalars(m):
    out = {}
    for name in ("within", "between", "mean"):
        for measure in ("sign", "cos"):
            out[f"{name}/{measure}"] = m.scalar(name, "train-train", measure)
    return out


def child_stream(spec):
    """Case 1-3: the streamed measurement at the default budget."""
    from keras_stiffness.measure.adapters import KerasAdapter
    from keras_stiffness.measure.config import MeasureConfig
    from keras_stiffness.measure.measuring import measure

    model = build(spec["model"])
    probes = make_probes(spec["model"], spec["n"])
    config = MeasureConfig(layers=spec["layers"])
    params = int(sum(int(v.shape.num_elements()) for v in model.trainable_variables))
    rec = Recorder(spec["label"])
    start, cpu = time.perf_counter(), time.process_time()
    rec.start = start

    def on_start(header):
        print(PLAN + json.dumps(header.plan), flush=True)

    m, info = measure(KerasAdapter(model), probes, config, progress=rec, on_start=on_start)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu": cpu,
        "plan": info.plan,
        "params": params,
        "phases": rec.phases(info.plan["blocks"], seconds),
        "scalars": scalars(m),
        "spaces": len(m.spaces) if hasattr(m, "spaces") else None,
        "layers": len(info.rules),
    }


def child_whole(spec):
    """Case 4: the whole (N, N) matrices, then summarize on them (under an address-space limit)."""
    limit = int(spec["limit_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from keras_stiffness import gradient_gram
    from keras_stiffness.math.summarize import summarize
    from keras_stiffness.measure.adapters import KerasAdapter
    from keras_stiffness.measure.config import MeasureConfig

    model = build("mlp")
    probes = make_probes("mlp", spec["n"])
    config = MeasureConfig()
    adapter = KerasAdapter(model)
    n = probes.n
    times = {}
    start, cpu = time.perf_counter(), time.process_time()
    gram = gradient_gram(model, probes.x, probes.targets, block_size=n)
    times["gram"] = time.perf_counter() - start
    log(spec["label"], f"whole Gram {times['gram']:.1f} s, peak {peak_rss_kib() / 2**20:.2f} GiB so far")
    t = time.perf_counter()
    reps = adapter.representations(probes.x, config.layers)
    times["representations"] = time.perf_counter() - t
    t = time.perf_counter()
    m = summarize(
        gram.total,
        gram.per_layer,
        probes.y,
        probes.is_val,
        probes.n_classes,
        reps,
        **config.summary_options(),
    )
    times["summarize"] = time.perf_counter() - t
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "times": times, "scalars": scalars(m), "limit_bytes": limit}


def _arrays(value, out):
    """Every ndarray inside a capture's nested args/kwargs/values/grads (in a fixed order)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        out.append(value)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _arrays(v, out)
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            _arrays(value[k], out)
    return out


def _median(fn, repeats):
    import statistics

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def child_spill(spec):
    """Case 5: recompute one block's capture vs spill its arrays to disk and read them back."""
    import numpy as np

    from keras_stiffness.engine.api import Prepared

    b, repeats = spec["block_size"], spec["repeats"]
    model = build(spec["model"])
    probes = make_probes(spec["model"], max(spec["n"], b))
    setup = Prepared(model, probes.x, probes.targets)
    setup.capture_block(0, b)  # warm-up: traces the capture pass
    recompute = _median(lambda: setup.capture_block(0, b), repeats)
    block = setup.capture_block(0, b)
    arrays = [block.losses]
    for captured in block.captures.values():
        for call in captured.calls:
            for part in (call.args, call.kwargs, call.values, call.grads):
                _arrays(part, arrays)
    nbytes = sum(a.nbytes for a in arrays)
    with tempfile.TemporaryDirectory(prefix="scale_bench_", dir=spec["spill_dir"]) as tmp:
        paths = [os.path.join(tmp, f"{k}.npy") for k in range(len(arrays))]

        def write():
            for path, a in zip(paths, arrays):
                with open(path, "wb") as f:
                    np.save(f, a, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())

        def drop_pages():
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

        def read():
            return [np.load(path, allow_pickle=False) for path in paths]

        write_s = _median(write, repeats)
        read_warm = _median(read, repeats)
        cold = []
        for _ in range(repeats):
            drop_pages()
            t = time.perf_counter()
            back = read()
            cold.append(time.perf_counter() - t)
        read_cold = sorted(cold)[len(cold) // 2]
        same = all(np.array_equal(a, r) for a, r in zip(arrays, back))
    return {
        "block_size": b,
        "bytes": nbytes,
        "arrays": len(arrays),
        "recompute": recompute,
        "write": write_s,
        "read_warm": read_warm,
        "read_cold": read_cold,
        "round_trip_equal": bool(same),
    }


def child(spec):
    import faulthandler
    import signal

    import tensorflow as tf

    faulthandler.enable()  # a crash in native code prints the Python stack to stderr (the log)

    def terminated(signum, frame):
        """Stop at the next block (never inside the library's own clean-up, e.g. of its spilled captures)."""
        if STOP["reason"] is not None:
            return  # already stopping
        STOP["reason"] = f"signal {signum} (SIGTERM) after {time.perf_counter() - started:.0f} s"
        if RECORDER is None:  # not measuring blocks (spill or whole-matrix case): stop now
            raise Terminated(STOP["reason"])

    started = time.perf_counter()
    signal.signal(signal.SIGTERM, terminated)
    tf.get_logger().setLevel("ERROR")
    run = {"stream": child_stream, "whole": child_whole, "spill": child_spill}[spec["kind"]]
    try:
        out = run(spec)
        out["ok"] = True
    except BaseException as exc:  # noqa: BLE001 - report any failure (MemoryError too) with its traceback
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        if not isinstance(exc, Terminated):
            out["traceback"] = traceback.format_exc()
        if RECORDER is not None:
            out["partial"] = RECORDER.partial()
    import gc

    gc.collect()  # the failed measurement's frames are gone: its block stream removes its spilled captures now
    out["peak_gib"] = peak_rss_kib() / 2**20
    out["ru_maxrss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(RESULT + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------- parent


def run_child(spec, timeout=None):
    """Run one case in a fresh process; its stderr (progress) goes to ours, its result comes back."""
    log(spec["label"], "start")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    timed_out = False
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.terminate()  # our own child, by its handle: it reports how far it got
        try:
            stdout, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
    wall = time.perf_counter() - start
    lines = stdout.splitlines()
    results = [line for line in lines if line.startswith(RESULT)]
    plans = [line for line in lines if line.startswith(PLAN)]
    if results:
        out = json.loads(results[-1][len(RESULT) :])
    else:
        out = {"ok": False, "error": f"child died (exit {proc.returncode}) without a result; its stderr is in the log"}
    if timed_out:
        out["error"] = f"stopped at the {timeout:.0f} s timeout ({out.get('error', '')})"
    if plans and "plan" not in out:
        out["plan"] = json.loads(plans[-1][len(PLAN) :])
    out["wall"] = wall
    log(spec["label"], f"done in {wall:.0f} s ({'ok' if out['ok'] else 'FAILED'})")
    return out


def git_state():
    """The commit measured, and the library files changed since it (others may be editing them)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return proc.stdout.rstrip() if proc.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M").strip() or "unknown commit"
    changed = [line[3:] for line in git("status", "--porcelain", "keras_stiffness").splitlines()]
    return f"{commit}" + (f", uncommitted changes in {', '.join(changed)}" if changed else ", clean")


def available_bytes():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fmt_plan(r):
    p = r.get("plan") or {}
    if not p:
        return f"{'-':>7}{'-':>7}{'-':>8}{'-':>7}"
    return f"{p['block_size']:>7}{p['blocks']:>7}{p['block_pairs']:>8}{p['cached_blocks']:>7}"


def verdict(ok):
    return "PASS" if ok else "FAIL"


def print_stream_row(name, n, r, target_gib, extra=""):
    if r["ok"]:
        holds = r["peak_gib"] < target_gib
        print(
            f"{name:<28}{n:>7}{fmt_plan(r)}{r['seconds']:>10.1f}{r['cpu']:>10.1f}{r['peak_gib']:>10.2f}"
            f"   < {target_gib:.0f} GiB: {verdict(holds)}{extra}"
        )
    else:
        print(f"{name:<28}{n:>7}{fmt_plan(r)}   FAILED: {r['error']}  (peak {r.get('peak_gib', float('nan')):.2f} GiB)")
        part = r.get("partial")
        if part:
            done, total, t = part["done"], part["total"], part["seconds"]
            rate = part.get("recent_s_per_block", float("nan"))
            guess = (
                f"; the last half of its blocks took {rate:.2f} s each: ~{part['projected'] / 60:.0f} min in all at "
                "that rate"
                if rate == rate
                else ""
            )
            print(f"    stopped at block {done}/{total} after {t:.0f} s{guess}; RSS by block: {part['rss_trace']}")
        if r.get("traceback"):
            print("    " + r["traceback"].rstrip().replace("\n", "\n    "))


def print_phases(name, r):
    ph = r.get("phases")
    if not r.get("ok") or not ph:
        return
    print(
        f"    {name}: setup {ph['setup']:.1f} s, diagonal blocks (norms) {ph['diagonal']:.1f} s, "
        f"pair blocks + representations + summaries {ph['pairs']:.1f} s ({ph['pair_blocks']} blocks), "
        f"result {ph['after']:.1f} s"
    )
    print(f"      RSS (GiB) by block: {ph['rss_trace']}")


def print_ratio(n, s, whole):
    if not (whole["ok"] and s["ok"]):
        print("  not available: " + ("the whole-matrix path failed" if not whole["ok"] else "the streamed path failed"))
        return
    time_ratio, mem_ratio = s["seconds"] / whole["seconds"], s["peak_gib"] / whole["peak_gib"]
    print(
        f"  N={n}: time   {s['seconds']:.1f} s / {whole['seconds']:.1f} s = {time_ratio:.2f}x  (cpu "
        f"{s['cpu'] / whole['cpu']:.2f}x)   <= {TIME_RATIO}x: {verdict(time_ratio <= TIME_RATIO)}"
    )
    print(f"  N={n}: memory {s['peak_gib']:.2f} GiB / {whole['peak_gib']:.2f} GiB = {mem_ratio:.2f}x")
    print(f"  {'summary (train-train)':<24}{'streamed':>14}{'whole':>14}{'abs diff':>11}")
    for k, v in s["scalars"].items():
        w = whole["scalars"][k]
        print(f"  {k:<24}{v:>14.8f}{w:>14.8f}{abs(v - w):>11.1e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N (2,000 / 5,000 / 192) to check the script")
    parser.add_argument("--no-baseline", action="store_true", help="skip the whole-matrix path (case 4)")
    parser.add_argument("--whole-limit-gib", type=float, default=20.0, help="address-space limit of case 4's child")
    parser.add_argument("--slow", type=float, default=1200.0, help="ResNet seconds beyond which layers='none' runs too")
    parser.add_argument("--resnet-timeout", type=float, default=None, help="stop the default-config ResNet case")
    parser.add_argument(
        "--fallback-n",
        type=int,
        default=None,
        help=f"compare at this N when the whole-matrix path fails at case 1's N (default {FALLBACK_N:,}; 0: never)",
    )
    parser.add_argument("--spill-dir", default=None, help="where case 5 spills (default: the temp directory)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child))
        return

    import platform

    sys.stdout.reconfigure(line_buffering=True)
    sizes = QUICK if args.quick else FULL
    note = "  (--quick: reduced N; targets apply to full sizes)" if args.quick else ""
    print(f"keras_stiffness scale benchmark{note}")
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), {platform.machine()}, "
        f"memory available at start {(available_bytes() or 0) / GIB:.1f} GiB; "
        "every case in a fresh process; peak = the child's VmHWM"
    )
    print(f"library: {git_state()}")
    results = {}
    results["mlp"] = run_child({"kind": "stream", "label": "mlp", "model": "mlp", "n": sizes["mlp"], "layers": "all"})
    results["mlp_large"] = run_child(
        {"kind": "stream", "label": "mlp-large", "model": "mlp", "n": sizes["mlp_large"], "layers": "all"}
    )
    results["resnet"] = run_child(
        {"kind": "stream", "label": "resnet50v2", "model": "resnet50v2", "n": sizes["resnet"], "layers": "all"},
        timeout=args.resnet_timeout,
    )
    slow = not results["resnet"]["ok"] or results["resnet"]["seconds"] > args.slow
    if slow or args.quick:
        results["resnet_none"] = run_child(
            {"kind": "stream", "label": "resnet-none", "model": "resnet50v2", "n": sizes["resnet"], "layers": "none"}
        )
    spill = {}
    for key, model, fallback in (("mlp", "mlp", 2000), ("resnet", "resnet50v2", 21)):
        plan = results[key].get("plan") or {}
        b = plan.get("block_size", fallback)
        if "block_size" not in plan:
            log(f"spill-{model}", f"no plan from case {key}: block size {b} assumed")
        spill[key] = run_child(
            {
                "kind": "spill",
                "label": f"spill-{model}",
                "model": model,
                "n": sizes[key],
                "block_size": b,
                "repeats": 3,
                "spill_dir": args.spill_dir,
            }
        )
    whole = fallback = None
    if not args.no_baseline:
        avail = available_bytes()
        limit = args.whole_limit_gib * GIB
        if avail is not None:
            limit = min(limit, avail - 1.5 * GIB)
        whole = run_child({"kind": "whole", "label": "whole-matrix", "n": sizes["mlp"], "limit_bytes": int(limit)})
        whole["limit_bytes"] = int(limit)
        fallback_n = args.fallback_n if args.fallback_n is not None else (None if args.quick else FALLBACK_N)
        if not whole["ok"] and fallback_n:
            fallback = {
                "n": fallback_n,
                "stream": run_child(
                    {"kind": "stream", "label": "mlp-fallback", "model": "mlp", "n": fallback_n, "layers": "all"}
                ),
                "whole": run_child(
                    {"kind": "whole", "label": "whole-fallback", "n": fallback_n, "limit_bytes": int(limit)}
                ),
            }

    # ------------------------------------------------------------------------------------------ report
    print()
    params = results["mlp"].get("params")
    if params:
        print(f"MLP: app.models.paper_mlp((784,), 10), {params:,} trainable weights")
    rn = results["resnet"].get("layers") or (results.get("resnet_none") or {}).get("layers")
    print(
        "ResNet50V2: keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=10)"
        + (f", {rn} per-layer Gram blocks" if rn else "")
    )
    print("time: wall seconds of the measured call (cpu: process CPU seconds, all threads); peak RSS in GiB\n")
    head = (
        f"{'case':<28}{'N':>7}{'block':>7}{'blocks':>7}{'pairs':>8}{'cached':>7}{'wall s':>10}{'cpu s':>10}"
        f"{'peak GiB':>10}   target"
    )
    print(head)
    print("-" * (len(head) + 22))
    print_stream_row("1 mlp streamed", sizes["mlp"], results["mlp"], TARGET_GIB["mlp"])
    print_stream_row("2 mlp streamed", sizes["mlp_large"], results["mlp_large"], TARGET_GIB["mlp_large"])
    print_stream_row("3 resnet50v2 layers=all", sizes["resnet"], results["resnet"], TARGET_GIB["resnet"])
    if "resnet_none" in results:
        print_stream_row("3 resnet50v2 layers=none", sizes["resnet"], results["resnet_none"], TARGET_GIB["resnet"])
    if whole is not None:
        if whole["ok"]:
            t = whole["times"]
            print(
                f"{'4 mlp whole-matrix':<28}{sizes['mlp']:>7}{sizes['mlp']:>7}{1:>7}{1:>8}{'-':>7}"
                f"{whole['seconds']:>10.1f}{whole['cpu']:>10.1f}{whole['peak_gib']:>10.2f}"
                f"   (Gram {t['gram']:.1f} s, representations {t['representations']:.1f} s, "
                f"summarize {t['summarize']:.1f} s)"
            )
        else:
            print(
                f"{'4 mlp whole-matrix':<28}{sizes['mlp']:>7}   FAILED under RLIMIT_AS = "
                f"{whole.get('limit_bytes', 0) / GIB:.1f} GiB: {whole['error']}"
                + (f" (peak {whole['peak_gib']:.2f} GiB)" if "peak_gib" in whole else "")
            )
            if whole.get("traceback"):
                print("    " + whole["traceback"].rstrip().replace("\n", "\n    "))

    print("\nwhere the streamed time goes (from the progress callback)")
    for key, name in (
        ("mlp", "1 mlp"),
        ("mlp_large", "2 mlp"),
        ("resnet", "3 resnet all"),
        ("resnet_none", "3 resnet none"),
    ):
        if key in results:
            print_phases(name, results[key])

    print("\nstreamed / whole-matrix (case 1 / case 4)")
    s = results["mlp"]
    if whole is None:
        print("  skipped (--no-baseline)")
    else:
        print_ratio(sizes["mlp"], s, whole)
    if fallback is not None:
        n = fallback["n"]
        print(f"\nstreamed / whole-matrix again at N = {n:,} (the whole-matrix path failed at N = {sizes['mlp']:,})")
        for label, r in (("mlp streamed", fallback["stream"]), ("mlp whole-matrix", fallback["whole"])):
            if not r["ok"]:
                print(f"  {label:<18} FAILED: {r['error']}")
                continue
            plan = r.get("plan")
            where = f"block {plan['block_size']}, {plan['block_pairs']} pairs" if plan else "one (N, N) block"
            times = ", ".join(f"{k} {v:.1f} s" for k, v in r.get("times", {}).items())
            print(
                f"  {label:<18} {where}: {r['seconds']:.1f} s (cpu {r['cpu']:.1f} s), peak {r['peak_gib']:.2f} GiB"
                + (f"  ({times})" if times else "")
            )
        print_ratio(n, fallback["stream"], fallback["whole"])

    print("\ncapture cache: recompute one block's capture vs spill it to disk and read it back")
    print(
        f"  {'model':<12}{'block':>6}{'MiB':>9}{'arrays':>7}{'recompute s':>13}{'write s':>9}{'read s':>8}"
        f"{'cold read s':>12}   cheaper per use"
    )
    for key, name in (("mlp", "mlp"), ("resnet", "resnet50v2")):
        r = spill[key]
        if not r["ok"]:
            print(f"  {name:<12}FAILED: {r['error']}")
            continue
        read = max(r["read_cold"], r["read_warm"])
        cheaper = "recompute" if r["recompute"] < read else "spill"
        factor = max(r["recompute"], read) / max(min(r["recompute"], read), 1e-9)
        print(
            f"  {name:<12}{r['block_size']:>6}{r['bytes'] / 2**20:>9.1f}{r['arrays']:>7}{r['recompute']:>13.3f}"
            f"{r['write']:>9.3f}{r['read_warm']:>8.3f}{r['read_cold']:>12.3f}   {cheaper}, {factor:.1f}x "
            f"(spill once + read: {(r['write'] + read) / r['recompute']:.2f}x recompute; round trip equal: "
            f"{r['round_trip_equal']})"
        )
    print(
        "  (medians of 3 after a warm-up capture; write = np.save + fsync of every array; read = np.load from "
        "the page cache; cold read after posix_fadvise(DONTNEED))"
    )

    print("\ntargets")
    checks = []
    for key, label in (("mlp", "1 mlp"), ("mlp_large", "2 mlp"), ("resnet", "3 resnet50v2 layers=all")):
        r = results[key]
        n = sizes[key]
        checks.append(
            (f"{label} N={n}: completes, peak < {TARGET_GIB[key]:.0f} GiB", r["ok"] and r["peak_gib"] < TARGET_GIB[key])
        )
    if "resnet_none" in results:
        r = results["resnet_none"]
        checks.append((f"3 resnet50v2 layers=none N={sizes['resnet']}: peak < 6 GiB", r["ok"] and r["peak_gib"] < 6))
    if whole is not None and whole["ok"] and s["ok"]:
        checks.append((f"1 mlp time <= {TIME_RATIO}x whole-matrix", s["seconds"] / whole["seconds"] <= TIME_RATIO))
    elif whole is not None:
        checks.append(
            (f"1 mlp time <= {TIME_RATIO}x whole-matrix at N={sizes['mlp']} (whole-matrix path failed)", False)
        )
    if fallback is not None and fallback["whole"]["ok"] and fallback["stream"]["ok"]:
        ratio = fallback["stream"]["seconds"] / fallback["whole"]["seconds"]
        checks.append((f"mlp time <= {TIME_RATIO}x whole-matrix at N={fallback['n']} (fallback)", ratio <= TIME_RATIO))
    for label, ok in checks:
        print(f"  {verdict(ok)}  {label}")


if __name__ == "__main__":
    main()
