"""The library side of ``kstiff train``: train the paper's nets while measuring stiffness.

One run = build the model, pick the probes, fit with a :class:`~keras_stiffness.StiffnessCallback`,
write the run file, its figures and a ``summary.json``, and return the summary. A learning-rate sweep
is several runs on the same data and probes, plus a figure of ξ against the learning rate.

Seeds: ``TrainConfig.seed`` (``--seed``) fixes the data split and the probe set; ``init_seed``
(``--seeds``, default: ``seed``) fixes the model's initialization and the training order (the shuffling
of each epoch). A sweep over several seeds therefore measures every run on the same probes, so the
spread across seeds is the spread due to initialization and minibatch order alone.

Output layout (``out`` defaults to ``runs/``)::

    out/
      <arch>-<data>-lr<lr>/          one folder per run, e.g. mlp-digits-lr0.001/
                                     (...-lr0.001-seed1/ when several seeds are asked)
        run.h5                       the HDF5 run file (kstiff inspect / kstiff plot / open_run)
        summary.json                 the summary printed at the end of the run
        class_matrices.png ...       the figures of keras_stiffness.plots.run_figures.plot_run
      <arch>-<data>-lr-sweep.png     with several learning rates: ξ vs learning rate (plot_sweep),
                                     mean and min–max band across seeds when there are several

TensorFlow, Keras and matplotlib are imported inside the functions. Library code never prints:
progress goes to the ``progress`` callable given by the caller (the CLI sends it to stderr).

Example:
    >>> summary = train_run(TrainConfig(epochs=3, per_class=10), "runs/demo")  # doctest: +SKIP
    >>> summary["run_file"]  # doctest: +SKIP
    'runs/demo/run.h5'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from keras_stiffness.app.models import ARCHITECTURES
from keras_stiffness.app.report import clean
from keras_stiffness.validation import (
    check_int,
    check_optional_int,
    check_positive_number,
    check_seed,
    check_writable,
    nearest_existing,
)

#: Default number of epochs: on ``digits`` the paper's MLP reaches a train loss of ~1e-4 by then
#: while its validation loss has been rising from its minimum (around epoch 10) for 20+ epochs.
DEFAULT_EPOCHS = 40
RUN_FILE = "run.h5"
SUMMARY_FILE = "summary.json"

Progress = Optional[Callable[[str], None]]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (the ``kstiff train`` options).

    Attributes:
        data: Data source of :func:`keras_stiffness.data.sources.load_data`.
        data_dir: TFDS data directory (None: ``TFDS_DATA_DIR`` or the TFDS default).
        arch: ``"mlp"`` (Dense 500-300-100) or ``"cnn"`` (Conv 16-32-32).
        epochs: Training epochs.
        learning_rate: Adam's constant learning rate.
        batch_size: Minibatch size.
        per_class: Training probes per class.
        val_per_class: Held-out probes per class; None: ``per_class``, capped at the smallest
            held-out class so no class comes up short.
        seed: Seed of the data split and the probe choice (and of the initialization and the
            shuffling unless ``init_seed`` is given).
        every_n_epochs: Also measure at the end of every n-th epoch (these rows carry the val loss).
        points_per_decade: Density of the log-spaced measurement steps.
        init_seed: Seed of the model's initialization and of the training order (shuffling, and any
            other random op during training); None: ``seed``. Varying it alone keeps the data split
            and the probes, so runs differing only in ``init_seed`` are measured on the same probes.
    """

    data: str = "digits"
    data_dir: Optional[str] = None
    arch: str = "mlp"
    epochs: int = DEFAULT_EPOCHS
    learning_rate: float = 1e-3
    batch_size: int = 32
    per_class: int = 50
    val_per_class: Optional[int] = None
    seed: int = 0
    every_n_epochs: int = 1
    points_per_decade: int = 6
    init_seed: Optional[int] = None

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"Received: arch={self.arch!r}; expected one of {list(ARCHITECTURES)}.")
        checked = {
            name: check_int(getattr(self, name), name)
            for name in ("epochs", "batch_size", "per_class", "every_n_epochs", "points_per_decade")
        }
        checked["val_per_class"] = check_optional_int(self.val_per_class, "val_per_class")
        checked["learning_rate"] = check_positive_number(self.learning_rate, "learning_rate")
        checked["seed"] = check_seed(self.seed)
        checked["init_seed"] = None if self.init_seed is None else check_seed(self.init_seed, "init_seed")
        for name, value in checked.items():  # frozen: the canonical values are set once, here
            object.__setattr__(self, name, value)

    @property
    def model_seed(self) -> int:
        """The seed actually used for initialization and shuffling: ``init_seed``, else ``seed``."""
        return self.seed if self.init_seed is None else self.init_seed

    def to_dict(self) -> dict:
        """JSON-ready settings; stored as ``config["train"]`` in the run file (``lr`` and ``init_seed``
        for plot_sweep). ``init_seed`` is written resolved (the seed used, never None)."""
        out = dataclasses.asdict(self)
        out["lr"] = out.pop("learning_rate")
        out["init_seed"] = self.model_seed
        return out


# --------------------------------------------------------------------------------------------------
# Names and paths
# --------------------------------------------------------------------------------------------------


def data_slug(source: str) -> str:
    """A short file-name-safe name of a data source.

    Example:
        >>> data_slug("digits"), data_slug("tfds:mnist"), data_slug("tfds:cifar10:train[:10%]")
        ('digits', 'mnist', 'cifar10-train_10pct')
        >>> data_slug("/data/my set.npz")
        'my_set'
    """
    from keras_stiffness.data.sources import parse_source

    kind, name, split = parse_source(source)
    if kind == "npz":
        name, split = pathlib.Path(name).stem, None
    elif kind == "tfds" and split == "train":
        split = None
    text = name if split is None else f"{name}-{split.replace('%', 'pct')}"
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", text).strip("_") or "data"


def lr_label(learning_rate: float) -> str:
    """``"lr0.001"``, ``"lr1e-05"``: the learning rate as written in run folder names."""
    return f"lr{learning_rate:g}"


def run_dir_name(arch: str, source: str, learning_rate: float, seed: Optional[int] = None) -> str:
    """The run's folder name, e.g. ``"mlp-digits-lr0.001"``; with ``seed`` (used when a sweep asks for
    several seeds) ``"mlp-digits-lr0.001-seed1"``.

    Example:
        >>> run_dir_name("mlp", "digits", 1e-3), run_dir_name("mlp", "digits", 1e-3, seed=1)
        ('mlp-digits-lr0.001', 'mlp-digits-lr0.001-seed1')
    """
    name = f"{arch}-{data_slug(source)}-{lr_label(learning_rate)}"
    return name if seed is None else f"{name}-seed{seed}"


def _unique(values: Sequence) -> list:
    out: list = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def plan_sweep(
    config: TrainConfig,
    learning_rates: Sequence[float],
    seeds: Optional[Sequence[int]] = None,
    out: os.PathLike = "runs",
) -> List[tuple]:
    """The runs of a sweep: ``(config, run folder)`` per (learning rate, seed), learning rates outermost.

    Duplicated learning rates or seeds are dropped. Folder names carry the seed only when there are
    several seeds (one seed keeps the plain ``<arch>-<data>-lr<lr>`` names).

    Args:
        config: Settings shared by the runs.
        learning_rates: One or more positive learning rates.
        seeds: Initialization/shuffling seeds (``init_seed``); None: ``[config.model_seed]``.
        out: Parent folder of the run folders.

    Raises:
        ValueError: No or bad learning rates or seeds.

    Example:
        >>> [d.name for _, d in plan_sweep(TrainConfig(), [1e-3, 1e-2])]
        ['mlp-digits-lr0.001', 'mlp-digits-lr0.01']
        >>> [(c.learning_rate, c.init_seed, d.name) for c, d in plan_sweep(TrainConfig(), [1e-3, 1e-2], [0, 1])][:2]
        [(0.001, 0, 'mlp-digits-lr0.001-seed0'), (0.001, 1, 'mlp-digits-lr0.001-seed1')]
    """
    rates = _unique([check_positive_number(lr, "learning_rate") for lr in learning_rates])
    if not rates:
        raise ValueError("Received: no learning rate; expected one or more, e.g. [1e-3].")
    seeds = [config.model_seed] if seeds is None else _unique([check_seed(s, "seeds") for s in seeds])
    if not seeds:
        raise ValueError("Received: seeds=[]; expected one or more seeds, e.g. [0, 1, 2], or None.")
    out = pathlib.Path(out)
    plans = []
    for lr in rates:
        for seed in seeds:
            c = dataclasses.replace(config, learning_rate=float(lr), init_seed=seed)
            name = run_dir_name(c.arch, c.data, c.learning_rate, seed if len(seeds) > 1 else None)
            plans.append((c, out / name))
    return plans


def sweep_figure_path(out: os.PathLike, arch: str, source: str) -> pathlib.Path:
    """Where a sweep's ξ-vs-learning-rate figure goes: ``out/<arch>-<data>-lr-sweep.png``."""
    return pathlib.Path(out) / f"{arch}-{data_slug(source)}-lr-sweep.png"


def check_outputs(run_dirs: Sequence[os.PathLike], *, overwrite: bool) -> None:
    """Fail before any training when a run file exists (without ``overwrite``) or cannot be written.

    Raises:
        FileExistsError: ``<run_dir>/run.h5`` exists and ``overwrite`` is False.
        NotADirectoryError: A run folder path (or one of its parents) is a file.
        PermissionError: The nearest existing parent is not writable.
        IsADirectoryError: ``<run_dir>/run.h5`` is a folder.
    """
    for run_dir in run_dirs:
        run_file = os.path.join(run_dir, RUN_FILE)
        try:
            check_writable(run_file, overwrite=overwrite, make_parents=True)
        except FileExistsError as exc:
            raise FileExistsError(
                f"Received: output {run_file!r}, which already exists; expected a new run. "
                "Pass --overwrite (overwrite=True) to replace it, or choose another --out."
            ) from exc
        except NotADirectoryError as exc:
            raise NotADirectoryError(
                f"Received: output folder {str(run_dir)!r}, but {nearest_existing(run_dir)!r} is a file; "
                "expected a folder. Choose another --out."
            ) from exc
        except PermissionError as exc:
            raise PermissionError(
                f"Received: output folder {str(run_dir)!r}, but {nearest_existing(run_dir)!r} is not "
                "writable; expected a writable folder. Choose another --out."
            ) from exc


# --------------------------------------------------------------------------------------------------
# Data, probes, schedule
# --------------------------------------------------------------------------------------------------


def default_val_per_class(per_class: int, y_val: Optional[np.ndarray], n_classes: int) -> Optional[int]:
    """``per_class`` capped at the smallest held-out class (at least 1); None without held-out data.

    Example:
        >>> default_val_per_class(50, np.array([0, 0, 1, 1, 1]), 2)
        2
    """
    if y_val is None or len(y_val) == 0:
        return None
    counts = np.bincount(np.asarray(y_val), minlength=n_classes)
    counts = counts[counts > 0]
    return max(1, min(int(per_class), int(counts.min())))


def make_probes(
    data,
    *,
    per_class: int = 50,
    val_per_class: Optional[int] = None,
    seed: int = 0,
    n: Optional[int] = None,
    keep_targets: bool = True,
):
    """The fixed probe set: ``per_class`` training and ``val_per_class`` held-out probes per class.

    The loss gets the data's targets as given (one-hot/soft rows when ``data.targets_train`` holds
    them, see :meth:`~keras_stiffness.data.probes.ProbeSet.from_splits`), unless ``keep_targets`` is
    False. Data loaded with ``targets="regression"`` gives ``n`` training probes drawn at random
    (default :data:`DEFAULT_REGRESSION_PROBES`) and as many held-out ones (capped at the held-out size).

    Args:
        data: A :class:`~keras_stiffness.data.sources.DataSplits`.
        per_class: Training probes per class.
        val_per_class: Held-out probes per class; None: :func:`default_val_per_class`.
        seed: Selection seed.
        n: Training probes for regression data (None: :data:`DEFAULT_REGRESSION_PROBES`); must be
            None for class data.
        keep_targets: False: class ids for the loss even when the data holds one-hot rows (the
            models of ``kstiff train`` use ``sparse_categorical_crossentropy``).

    Returns:
        A :class:`~keras_stiffness.data.probes.ProbeSet` whose ``source`` is the data's name.

    Raises:
        ValueError: ``n`` given for class data.
    """
    from keras_stiffness.data.probes import ProbeSet

    if getattr(data, "target_kind", "classes") == "regression":
        n = DEFAULT_REGRESSION_PROBES if n is None else n
        val_n = None if data.y_val is None else max(1, min(int(n), len(data.y_val)))
        return ProbeSet.from_splits(data, n=n, val_n=val_n, seed=seed)
    if n is not None:
        raise ValueError(
            f"Received: n={n!r} for class data; expected per_class/val_per_class (n is the number of "
            "probes for regression targets). Drop n, or load the data with targets='regression'."
        )
    if val_per_class is None:
        val_per_class = default_val_per_class(per_class, data.y_val, data.n_classes)
    return ProbeSet.from_splits(
        data, per_class=per_class, val_per_class=val_per_class, seed=seed, keep_targets=keep_targets
    )


#: Training probes drawn for regression data when no number is given (``kstiff analyze --probes``).
DEFAULT_REGRESSION_PROBES = 200


def measurement_steps(epochs: int, steps_per_epoch: int, every_n_epochs: int, points_per_decade: int) -> List[int]:
    """Log-spaced optimizer steps (1, 2, 3, 5, 7, 10, ...) up to the last step, leaving out the steps
    that an epoch-end measurement already covers (so no step is measured twice).

    Example:
        >>> measurement_steps(2, 10, 1, 6)
        [1, 2, 3, 5, 7, 15]
    """
    from keras_stiffness.callback.schedule import log_steps

    total = epochs * steps_per_epoch
    at_epoch_end = {e * steps_per_epoch for e in range(every_n_epochs, epochs + 1, every_n_epochs)}
    return [s for s in log_steps(points_per_decade, total) if s not in at_epoch_end]


# --------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------


def _progress_callback(stiffness_cb, progress: Progress, label: str, epochs: int):
    """A Keras callback writing one progress line per epoch (and one for initialization)."""
    import keras

    class _Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if stiffness_cb.measurements:
                m = stiffness_cb.measurements[0]
                progress(f"{label} init: {_scalars_text(m)}")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            text = (
                f"{label} epoch {epoch + 1}/{epochs}: loss {logs.get('loss', math.nan):.4g}, "
                f"val_loss {logs.get('val_loss', math.nan):.4g}"
            )
            if stiffness_cb.measurements:
                text += (
                    f" | {_scalars_text(stiffness_cb.measurements[-1])} ({len(stiffness_cb.measurements)} measurements)"
                )
            progress(text)

    return _Progress()


def _scalars_text(m) -> str:
    parts = []
    for k, measure in enumerate(m.measures):
        parts.append(f"{measure} within {m.within[0, k]:+.3f} between {m.between[0, k]:+.3f}")
    return "; ".join(parts)


def _xi(m) -> Dict[str, Optional[float]]:
    if not m.spaces:
        return {}
    k = list(m.measures).index("sign") if "sign" in m.measures else 0
    return {space: clean(m.critical_length[r, k]) for r, space in enumerate(m.spaces)}


def _point(m) -> dict:
    out = {
        "step": int(m.step),
        "epoch": clean(m.epoch),
        "train_loss": clean(m.train_loss),
        "val_loss": clean(m.val_loss),
    }
    for p, pair_set in enumerate(m.pair_sets):
        for k, measure in enumerate(m.measures):
            out[f"{pair_set} within {measure}"] = clean(m.within[p, k])
            out[f"{pair_set} between {measure}"] = clean(m.between[p, k])
    out["critical_length"] = _xi(m)
    return out


def train_run(
    config: TrainConfig,
    run_dir: os.PathLike,
    *,
    data=None,
    probes=None,
    overwrite: bool = False,
    figures: bool = True,
    progress: Progress = None,
) -> dict:
    """Train one model with a StiffnessCallback; write ``run.h5``, figures and ``summary.json``.

    Args:
        config: The run's settings.
        run_dir: Folder for the run (created if missing).
        data: Already loaded :class:`~keras_stiffness.data.sources.DataSplits` (default: load ``config.data``).
        probes: Already built probe set (default: :func:`make_probes`).
        overwrite: Replace an existing ``run.h5``.
        figures: Write the figures of :func:`keras_stiffness.plots.run_figures.plot_run`.
        progress: Called with one line of text per epoch (and at initialization); None: silent.

    Returns:
        The summary dict (also written as ``summary.json``): paths, settings, losses, stiffness at
        initialization and at the end, ξ per representation space.

    Raises:
        FileExistsError: ``run.h5`` exists and ``overwrite`` is False.
        ValueError: Bad settings, or data that does not fit the architecture.
        DataNotFoundError: TFDS data not prepared (see :func:`keras_stiffness.data.sources.load_data`).
    """
    import keras

    from keras_stiffness.app.models import build_model
    from keras_stiffness.callback.stiffness_callback import StiffnessCallback
    from keras_stiffness.data.sources import load_data

    run_dir = pathlib.Path(run_dir)
    check_outputs([run_dir], overwrite=overwrite)
    if data is None:
        data = load_data(config.data, data_dir=config.data_dir, seed=config.seed)
    if probes is None:
        probes = make_probes(  # the models built here use sparse_categorical_crossentropy: class ids
            data, per_class=config.per_class, val_per_class=config.val_per_class, seed=config.seed, keep_targets=False
        )
    keras.utils.set_random_seed(config.model_seed)  # initialization and shuffling; data and probes use config.seed
    model = build_model(config.arch, data.input_shape, data.n_classes, config.learning_rate)
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_file = run_dir / RUN_FILE
    stiffness_cb = StiffnessCallback(
        probes,
        str(run_file),
        every_n_epochs=config.every_n_epochs,
        schedule=measurement_steps(config.epochs, steps_per_epoch, config.every_n_epochs, config.points_per_decade),
        overwrite=overwrite,
        run_config={"train": config.to_dict(), "measurement_schedule": "log-spaced steps + epoch ends"},
    )
    callbacks = [stiffness_cb]
    label = f"[{run_dir.name}]"
    if progress is not None:
        callbacks.append(_progress_callback(stiffness_cb, progress, label, config.epochs))
    validation = (data.x_val, data.y_val) if data.x_val is not None else None
    start = time.time()
    history = model.fit(
        data.x_train,
        data.y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=validation,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    train_seconds = time.time() - start
    paths: List[str] = []
    if figures:
        from keras_stiffness.plots.run_figures import plot_run

        if progress is not None:
            progress(f"{label} writing figures")
        paths = [str(p) for p in plot_run(str(run_file), run_dir)]
    summary = _summary(
        config, run_dir, run_file, paths, stiffness_cb.measurements, history.history, probes, model, train_seconds
    )
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _summary(config, run_dir, run_file, figures, measurements, history, probes, model, seconds) -> dict:
    first, last = measurements[0], measurements[-1]
    hist = {k: [float(v) for v in vs] for k, vs in history.items()}
    val = hist.get("val_loss", [])
    return clean(
        {
            "run_dir": str(run_dir),
            "run_file": str(run_file),
            "summary_file": str(pathlib.Path(run_dir) / SUMMARY_FILE),
            "figures": figures,
            "train": config.to_dict(),
            "model": {"name": model.name, "n_params": int(model.count_params())},
            "probes": {"n_train": probes.n_train, "n_val": probes.n_val, "n_classes": probes.n_classes},
            "steps": int(last.step),
            "n_measurements": len(measurements),
            "train_seconds": seconds,
            "final": {
                "train_loss": hist.get("loss", [math.nan])[-1],
                "val_loss": val[-1] if val else math.nan,
                "train_accuracy": hist.get("accuracy", [math.nan])[-1],
                "val_accuracy": hist.get("val_accuracy", [math.nan])[-1],
                "min_val_loss": min(val) if val else math.nan,
                "min_val_loss_epoch": int(np.argmin(val)) + 1 if val else None,
            },
            "init": _point(first),
            "end": _point(last),
        }
    )


# --------------------------------------------------------------------------------------------------
# A learning-rate sweep
# --------------------------------------------------------------------------------------------------


def train_sweep(
    config: TrainConfig,
    learning_rates: Sequence[float],
    out: os.PathLike = "runs",
    *,
    seeds: Optional[Sequence[int]] = None,
    overwrite: bool = False,
    figures: bool = True,
    progress: Progress = None,
) -> dict:
    """One run per (learning rate, seed) on the same data and probes, plus the sweep figure.

    The data split and the probes come from ``config.seed`` for every run; each seed of ``seeds``
    sets the run's initialization and training order (``TrainConfig.init_seed``). Run folders are
    those of :func:`plan_sweep`.

    Args:
        config: Settings shared by the runs (its ``learning_rate`` and ``init_seed`` are replaced).
        learning_rates: One or more positive learning rates (duplicates are dropped).
        out: Parent folder of the run folders.
        seeds: Initialization/shuffling seeds, one run each per learning rate (duplicates dropped);
            None: the single seed ``config.model_seed``.
        overwrite: Replace existing run files.
        figures: Write each run's figures and, with two or more learning rates, the ξ-vs-learning-rate
            figure (mean and min–max band across seeds where a learning rate has several).
        progress: Called with progress lines.

    Returns:
        ``{"runs": [summary, ...], "sweep_figure": path or None}``, runs in the order of
        :func:`plan_sweep` (learning rates outermost); each summary's ``train`` holds ``lr``,
        ``seed`` and ``init_seed``.

    Raises:
        FileExistsError: A run file exists and ``overwrite`` is False (all checked before any training).
        ValueError: No or bad learning rates or seeds, bad settings.
    """
    from keras_stiffness.data.sources import load_data

    plans = plan_sweep(config, learning_rates, seeds, out)
    check_outputs([run_dir for _, run_dir in plans], overwrite=overwrite)
    data = load_data(config.data, data_dir=config.data_dir, seed=config.seed)
    probes = make_probes(
        data, per_class=config.per_class, val_per_class=config.val_per_class, seed=config.seed, keep_targets=False
    )
    summaries = []
    for c, run_dir in plans:
        if progress is not None:
            progress(
                f"[{run_dir.name}] training {c.arch} on {c.data} for {c.epochs} epochs "
                f"(lr {c.learning_rate:g}, batch {c.batch_size}, seed {c.model_seed}); run file {run_dir / RUN_FILE}"
            )
        summaries.append(
            train_run(c, run_dir, data=data, probes=probes, overwrite=overwrite, figures=figures, progress=progress)
        )
    sweep = None
    if figures and len({c.learning_rate for c, _ in plans}) > 1:
        from keras_stiffness.plots.run_figures import plot_sweep

        sweep = str(plot_sweep([s["run_file"] for s in summaries], sweep_figure_path(out, config.arch, config.data)))
    return {"runs": summaries, "sweep_figure": sweep}
