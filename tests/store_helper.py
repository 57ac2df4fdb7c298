"""Test helpers for the run store: a RunInfo/Measurement factory and a subprocess writer/reader.

Imported by ``tests/test_store.py`` and run as a script by its multi-process tests:

    python tests/store_helper.py write PATH K [partial]   append K rows (printing "row i flushed"),
                                                           optionally half a row more, then sleep
    python tests/store_helper.py read PATH TARGET          print the row count each time it changes
                                                           until it reaches TARGET
"""

from __future__ import annotations

import sys
import time

import numpy as np

from keras_stiffness.math.record import Measurement
from keras_stiffness.store.layout import RunInfo
from keras_stiffness.store.reader import open_run
from keras_stiffness.store.writer import RunWriter

C, P, M, L, R, B, N = 3, 3, 2, 2, 3, 5, 8
PAIR_SETS = ("train-train", "train-val", "val-val")[:P]
MEASURES = ("sign", "cos")[:M]
LAYERS = tuple(f"dense_{i}" for i in range(L))
SPACES = ("input",) + LAYERS


def make_info(save_gram: bool = False, probe_hash: str = "hash-0", **changes) -> RunInfo:
    """A RunInfo with C=3, P=3, M=2, L=2, R=3, B=5, N=8; keyword arguments replace fields."""
    fields = dict(
        class_names=["cat", "dog", "émeu"],
        probe_labels=np.arange(N) % C,
        probe_indices=np.arange(N) * 10,
        probe_is_val=np.arange(N) >= N - 3,
        probe_hash=probe_hash,
        pair_sets=PAIR_SETS,
        measures=MEASURES,
        layers=LAYERS,
        spaces=SPACES,
        bins=B,
        metric="cosine",
        min_count=2,
        save_gram=save_gram,
        config={"epochs": 3, "optimizer": {"name": "sgd", "lr": 0.1}, "seed": None},
        model_summary="Model: mlp\n dense_0 (Dense)\n dense_1 (Dense)",
        loss="categorical_crossentropy",
        rules={"dense_0": "dense", "dense_1": "dense"},
        versions={"numpy": np.__version__},
    )
    fields.update(changes)
    return RunInfo(**fields)


def make_measurement(
    step: int, seed: int = 0, save_gram: bool = False, layers: tuple = LAYERS, spaces: tuple = SPACES, **changes
) -> Measurement:
    """A Measurement with random values of the right shapes (some NaN); keywords replace fields."""
    rng = np.random.default_rng(seed * 1000 + step)
    L, R = len(layers), len(spaces)  # noqa: N806 - axis letters
    u = lambda *shape: rng.uniform(-1, 1, shape)  # noqa: E731
    k = lambda *shape: rng.integers(0, 50, shape)  # noqa: E731
    class_matrix = u(P, M, C, C)
    class_matrix[2, :, 0, 1] = np.nan
    curve_mean = u(R, M, B)
    curve_mean[:, :, -1] = np.nan
    fields = dict(
        step=step,
        epoch=step / 10,
        train_loss=float("nan") if step == 0 else 1 / (1 + step),
        val_loss=float(rng.uniform()),
        learning_rate=0.1,
        wall_time=0.5 * step,
        pair_sets=PAIR_SETS,
        measures=MEASURES,
        class_matrix=class_matrix,
        class_pairs=k(P, C, C),
        within=u(P, M),
        between=u(P, M),
        mean=u(P, M),
        pairs=k(P),
        layers=layers,
        layer_mean=u(L, P, M),
        layer_within=u(L, P, M),
        layer_between=u(L, P, M),
        spaces=spaces,
        distance_edges=np.sort(rng.uniform(0, 2, (R, B + 1)), axis=1),
        curve_mean=curve_mean,
        curve_count=k(R, B),
        critical_length=np.array([[np.nan, 0.3]] * R).reshape(R, M),
        critical_length_fit=u(R, M),
        zero_grad=int(rng.integers(0, 3)),
        gram=u(N, N) if save_gram else None,
    )
    fields.update(changes)
    return Measurement(**fields)


def _write(path: str, k: int, partial: bool) -> None:
    writer = RunWriter.create(path, make_info())
    for i in range(k):
        writer.append(make_measurement(step=10 * i))
        print(f"row {i + 1} flushed", flush=True)
    if partial:  # what a crash in the middle of append() leaves: every series but step is longer
        for name, ds in writer._datasets.items():
            if name != "step":
                ds.resize(k + 1, axis=0)
        writer._file.flush()
        print("partial row flushed", flush=True)
    time.sleep(60)  # killed by the test long before


def _read(path: str, target: int) -> None:
    deadline = time.monotonic() + 20
    with open_run(path) as run:
        last = -1
        while time.monotonic() < deadline:
            run.refresh()
            n = len(run)
            if n != last:
                step = run.measurement(-1).step if n else -1
                print(f"rows {n} step {step}", flush=True)
                last = n
            if n >= target:
                return
            time.sleep(0.005)
    sys.exit(f"timed out with {last} rows")


if __name__ == "__main__":
    command, path = sys.argv[1], sys.argv[2]
    if command == "write":
        _write(path, int(sys.argv[3]), partial=sys.argv[4:] == ["partial"])
    else:
        _read(path, int(sys.argv[3]))
