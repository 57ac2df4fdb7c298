"""StiffnessCallback: measure stiffness on a fixed probe set during ``model.fit``."""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Optional, Sequence, Union

import keras
import numpy as np

from keras_stiffness.callback.schedule import StepSchedule, make_schedule
from keras_stiffness.math.record import Measurement
from keras_stiffness.measure.adapters import as_adapter
from keras_stiffness.measure.config import MeasureConfig
from keras_stiffness.measure.measuring import measure, set_cost

ScheduleArg = Union[None, str, Sequence[int]]


class StiffnessCallback(keras.callbacks.Callback):
    """Measure stiffness on a fixed probe set during ``model.fit`` and append it to an HDF5 run file.

    Measures once before training (step 0, at initialization) and then on the chosen schedule: every
    ``every_n_epochs`` epochs (default 1), or at optimizer steps given by ``schedule`` /
    ``every_n_steps``. Batch-level hooks are installed only when a step schedule is asked for, so the
    default costs nothing between epoch ends. Each measurement:

    - computes the exact per-example-gradient Gram of the probes in inference mode (weights, optimizer
      state and BatchNormalization statistics are never changed),
    - summarizes it (class stiffness matrices for train–train, train–val, val–val; within/between;
      per-layer stiffness; stiffness vs distance in input and layer spaces; critical lengths),
    - appends one row, tagged with step, epoch, train loss, validation loss and learning rate, and
      with its cost ``seconds`` (wall seconds from the start of the measurement to just before the
      row is appended: computing, Keras logs, TensorBoard; the append itself is excluded), to the
      run file and flushes it (readable while training writes; a crash loses at most that row),
    - puts scalars such as ``stiffness_within_cos`` and ``stiffness_train_val_between_sign`` into the
      epoch ``logs`` so History, CSVLogger, the progress bar, TensorBoard and
      ``EarlyStopping(monitor=...)`` see them. Place this callback before the ones that read them. In
      epochs without a measurement the latest values are repeated.

    Args:
        probes: A :class:`~keras_stiffness.data.probes.ProbeSet` (its held-out part gives train–val pairs).
        path: HDF5 run file to write, or None to keep measurements in memory only
            (:attr:`measurements`).
        every_n_epochs: Measure at the end of every n-th epoch. Default: 1 without a step schedule,
            none with one.
        schedule: ``"log"`` for log-spaced steps (1, 2, 3, 5, 8, ... about ``points_per_decade`` per
            decade: dense early, where stiffness changes fastest), or an explicit list of steps.
        every_n_steps: Measure every n optimizer steps.
        points_per_decade: Density of ``schedule="log"``.
        measures: Subset of ("sign", "cos").
        distances: Compute stiffness vs distance and critical lengths.
        layers: Layers whose representation spaces get distance curves: "all", "none" or names.
        metric: Distance metric, "cosine" (``1 − cos``) or "euclidean".
        bins: Distance bins; ``min_count``: fewest pairs for a bin to count.
        save_gram: Also store the raw ``(N, N)`` Gram matrix in each row, written block by block as it
            is formed (never held whole).
        gram_dtype: How ``save_gram`` stores it: ``"float64"`` or ``"float32"`` (half the size).
        large_gram: Allow a saved Gram matrix over 2 GiB per row (N > 16,384 in float64); without it
            such a run is refused at once, saying so.
        loss: Loss to differentiate; default the model's compiled loss.
        method: Gram method, "auto", "structured" or "jacobian".
        adapter: Measure through this :class:`~keras_stiffness.measure.adapters.StiffnessAdapter`
            (e.g. a :class:`~keras_stiffness.measure.adapters.FunctionAdapter`) instead of the
            model being fit, which is otherwise wrapped in a ``KerasAdapter`` with ``loss`` and
            ``method`` at fit start. Give an adapter its own loss and method.
        tensorboard_dir: If set, write within/between scalars, the class matrix as an image and a
            histogram of pairwise stiffness there.
        on_error: "warn" skips a failed measurement with a warning naming the step; "raise" stops
            training. The measurement at ``fit`` start always raises: it checks the whole setup (probes
            vs model, run file, resume) before any training time is spent.
        overwrite: Replace an existing run file (the old file stays intact until the new one exists).
        resume: Append to an existing run file: checks its format and probe hash, drops rows at or
            beyond the current optimizer step, and continues (use with ``initial_epoch`` > 0).
        run_config: Extra JSON-serializable items stored in the run's configuration.
        memory_budget: Bytes, or a string such as ``"2GiB"``, that a measurement may use for its Gram
            blocks, representations and summaries (default ``min(2 GiB, memory / 4)``): the ``(N, N)``
            Gram matrix is never formed, so any number of probes fits. Recorded with every row.
        strategy: A ``tf.distribute`` strategy to share the measurement. Default: the model's own
            (``model.distribute_strategy``): under a ``MirroredStrategy`` the Gram blocks are spread
            over its devices. Under a ``MultiWorkerMirroredStrategy`` (driven from a custom training loop
            through ``keras.callbacks.CallbackList``, see the README) every worker measures its share of
            the blocks, the sums are all-reduced so every worker logs the same scalars, and only the
            chief writes the run file.
        verbose: Show the progress of measurements longer than a few seconds on stderr (blocks done
            of total, time left), as separate lines beside Keras' progress bar.

    Raises:
        TypeError: ``probes`` is not a ProbeSet.
        ValueError: Bad schedule or option values.
        FileExistsError: ``path`` exists and neither ``overwrite`` nor ``resume`` is set.
        FileNotFoundError / PermissionError: the directory of ``path`` is missing or not writable.

    Example:
        >>> from keras_stiffness.data.probes import ProbeSet
        >>> x, y = np.random.default_rng(0).normal(size=(40, 3)).astype("float32"), np.arange(40) % 2
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> probes = ProbeSet(x[:30], y[:30], per_class=5, x_val=x[30:], y_val=y[30:])
        >>> cb = StiffnessCallback(probes, every_n_epochs=1, bins=4, min_count=1)  # path=None: no run file
        >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
        >>> len(history.history["stiffness_within_cos"]), len(cb.measurements)  # each epoch, and at the start
        (2, 3)
    """

    def __init__(
        self,
        probes,
        path: Optional[str] = None,
        *,
        every_n_epochs: Optional[int] = None,
        schedule: ScheduleArg = None,
        every_n_steps: Optional[int] = None,
        points_per_decade: int = 6,
        measures: Sequence[str] = ("sign", "cos"),
        distances: bool = True,
        layers: Union[str, Sequence[str]] = "all",
        metric: str = "cosine",
        bins: int = 20,
        min_count: int = 10,
        save_gram: bool = False,
        gram_dtype: str = "float64",
        large_gram: bool = False,
        loss=None,
        method: str = "auto",
        adapter=None,
        tensorboard_dir: Optional[str] = None,
        on_error: str = "warn",
        overwrite: bool = False,
        resume: bool = False,
        run_config: Optional[dict] = None,
        memory_budget=None,
        strategy=None,
        verbose: int = 0,
    ):
        super().__init__()
        from keras_stiffness.data.probes import ProbeSet
        from keras_stiffness.engine.api import parse_method
        from keras_stiffness.measure.adapters import StiffnessAdapter
        from keras_stiffness.validation import check_choice, check_memory_budget, check_writable

        if not isinstance(probes, ProbeSet):
            raise TypeError(
                f"Received probes of type {type(probes).__name__}; expected a keras_stiffness.ProbeSet. "
                "Fix: probes = ProbeSet(x, y, per_class=50)."
            )
        if adapter is not None:
            if not isinstance(adapter, StiffnessAdapter):
                raise TypeError(
                    f"Received adapter of type {type(adapter).__name__}; expected a StiffnessAdapter "
                    "(layer_names, gram, representations, describe, check_probes), e.g. a FunctionAdapter."
                )
            if loss is not None or method != "auto":
                raise ValueError(
                    f"Received loss={loss!r}, method={method!r} together with adapter="
                    f"{type(adapter).__name__}; expected them only for the model being fit. Give the "
                    "adapter its own loss and method."
                )
        check_choice(on_error, "on_error", ("warn", "raise"))
        if overwrite and resume:
            raise ValueError("Received overwrite=True and resume=True; expected at most one of them.")
        self.probes = probes
        self.path = None if path is None else os.fspath(path)
        self.schedule: StepSchedule = make_schedule(every_n_epochs, schedule, every_n_steps, points_per_decade)
        self.config = MeasureConfig(
            measures=measures,
            distances=distances,
            layers=layers,
            metric=metric,
            bins=bins,
            min_count=min_count,
            save_gram=save_gram,
            gram_dtype=gram_dtype,
        )
        self.large_gram = bool(large_gram)
        if self.config.save_gram and path is not None:
            from keras_stiffness.store.layout import check_gram_size

            check_gram_size(probes.n, self.config.gram_dtype, large_gram=self.large_gram)
        self.loss = loss
        self.method = parse_method(method).value
        self.adapter = adapter
        self.tensorboard_dir = tensorboard_dir
        self.on_error = on_error
        self.overwrite = bool(overwrite)
        self.resume = bool(resume)
        self.run_config = dict(run_config or {})
        self.memory_budget = None if memory_budget is None else check_memory_budget(memory_budget)
        self.strategy = strategy
        self.verbose = int(verbose)
        if self.path is not None:
            check_writable(
                self.path,
                overwrite=self.overwrite or self.resume,
                exists_fix="Pass overwrite=True to replace it, or resume=True to append to it, or choose another path.",
            )
        self.measurements: list = []
        #: Wall seconds spent in each measurement (computing, logging and writing), successful or not.
        #: A measurement's own ``seconds`` tag stops just before its row is appended, so it is smaller.
        self.seconds: list = []
        self.last_scalars: dict = {}
        self._writer = None
        self._gram_row = None
        self._tb = None
        self._adapter = None
        self._start = None
        self._epoch = 0
        self._steps_per_epoch = None
        if self.schedule.uses_steps:
            # Instance attribute: batch hooks exist only when a step schedule asks for them.
            from keras_stiffness import keras_compat

            keras_compat.install_batch_hook(self, self._on_train_batch_end)

    # ----------------------------------------------------------------- Keras hooks

    def on_train_begin(self, logs=None):
        # The edge: the model being fit becomes a KerasAdapter; below, only the adapter protocol is used.
        target = self.adapter if self.adapter is not None else self.model
        self._adapter = as_adapter(target, loss=self.loss, method=self.method)
        self._adapter.check_probes(self.probes.x, self.probes.targets)
        if self._start is None:
            self._start = time.time()
        self._steps_per_epoch = (self.params or {}).get("steps")
        step = self._step()
        # fit does not tell callbacks its initial_epoch; a resumed fit starts at step / steps-per-epoch.
        epoch = step / self._steps_per_epoch if step and self._steps_per_epoch else float(self._epoch)
        self._measure(step=step, epoch=float(epoch), logs=None, at_start=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        if self.schedule.epoch_due(epoch + 1):
            self._measure(step=self._step(), epoch=float(epoch + 1), logs=logs)
        if logs is not None:
            logs.update(self.last_scalars)

    def _on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.schedule.step_due(step):
            frac = (batch + 1) / self._steps_per_epoch if self._steps_per_epoch else 0.0
            self._measure(step=step, epoch=self._epoch + frac, logs=logs)

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Close the run file and the TensorBoard writer (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # ----------------------------------------------------------------- measuring

    def _step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return 0
        return int(optimizer.iterations.numpy())

    def _learning_rate(self) -> float:
        optimizer = getattr(self.model, "optimizer", None)
        try:
            return float(np.asarray(optimizer.learning_rate.numpy()))
        except (AttributeError, TypeError, ValueError):
            return math.nan

    def _tags(self, step: int, epoch: float, logs, losses: np.ndarray) -> dict:
        logs = logs or {}
        train_loss = logs.get("loss")
        is_val = self.probes.is_val
        probe_loss = float(np.mean(losses[~is_val]))
        return {
            "probe_loss": probe_loss,
            "probe_val_loss": float(np.mean(losses[is_val])) if is_val.any() else math.nan,
            "step": step,
            "epoch": epoch,
            "train_loss": float(train_loss) if train_loss is not None else probe_loss,
            "val_loss": float(logs["val_loss"]) if "val_loss" in logs else math.nan,
            "learning_rate": self._learning_rate(),
            "wall_time": time.time() - self._start,
        }

    def _strategy(self):
        """The strategy to share measurements with: the one given, else the model's (if any)."""
        if self.strategy is not None:
            return self.strategy
        return getattr(self.model, "distribute_strategy", None)

    def _measure(self, step: int, epoch: float, logs, at_start: bool = False) -> Optional[Measurement]:
        from keras_stiffness.measure.distribute import is_chief, worker_share

        start = time.perf_counter()
        strategy = self._strategy()
        chief = _is_chief() and is_chief(strategy)
        to_file = self.path is not None and chief
        try:
            if self.config.save_gram and worker_share(strategy)[1] > 1:
                raise ValueError(
                    "Received save_gram=True under a strategy with several workers; each worker forms only its "
                    "share of the Gram blocks, so the chief cannot write the matrix. Fix: save_gram=False, or "
                    "measure with one worker (kstiff analyze on the saved model)."
                )
            m, info = measure(
                self._adapter,
                self.probes,
                self.config,
                tags={"step": step},
                memory_budget=self.memory_budget,
                strategy=strategy,
                progress=self._progress(),
                on_start=(lambda header: self._on_start(header, step)) if to_file else None,
                on_block=self._on_block if to_file and self.config.save_gram else None,
                sample_cos=self.tensorboard_dir is not None and chief,
            )
            for key, value in self._tags(step, epoch, logs, info.losses).items():
                setattr(m, key, value)
            set_cost(m, info)
            self._record(m, info, start, to_file, chief)
        except Exception as exc:  # noqa: BLE001 - the failure policy is the user's choice
            if self.on_error == "raise" or at_start:
                raise
            warnings.warn(
                f"StiffnessCallback: the measurement at step {step} (epoch {epoch:g}) failed and was "
                f"skipped: {type(exc).__name__}: {exc}",
                stacklevel=2,
            )
            return None
        finally:
            self.seconds.append(time.perf_counter() - start)
        return m

    def _progress(self):
        if not self.verbose:
            return None
        from keras_stiffness.measure.progress import Progress

        return Progress("stiffness", in_place=False)  # whole lines: Keras' bar owns the current one

    def _on_start(self, header, step: int) -> None:
        """Before the blocks stream: open the run file (first measurement) and begin a Gram row."""
        if self._writer is None:  # opened first: the check of the run file comes early
            self._writer = self._open_writer(header, step)
        if self.config.save_gram:
            self._gram_row = self._writer.begin_gram()

    def _on_block(self, block) -> None:
        self._gram_row.write(block.rows.start, block.cols.start, block.total)

    def _record(self, m: Measurement, info, start: float, to_file: bool, chief: bool) -> None:
        """Log ``m``, then append it to the run file last, its ``seconds`` (since ``start``) set just before."""
        from keras_stiffness.callback.recording import log_scalars, write_tensorboard

        self.measurements.append(m)
        self.last_scalars = log_scalars(m)
        if self.tensorboard_dir is not None and chief:
            if self._tb is None:
                import tensorflow as tf

                self._tb = tf.summary.create_file_writer(self.tensorboard_dir)
            write_tensorboard(self._tb, m, info.sampled_cos)
        m.seconds = time.perf_counter() - start  # the cost up to the write; the append is excluded
        if to_file:
            self._writer.append(m)
            self._gram_row = None

    def _open_writer(self, header, step: int):
        from keras_stiffness.callback.recording import make_run_info
        from keras_stiffness.store.writer import RunWriter

        description = self._adapter.describe()
        info = make_run_info(
            header,
            self.probes,
            description,
            rules=header.rules,
            config=self._run_config(description.get("method", self.method)),
            metric=self.config.metric,
            min_count=self.config.min_count,
            save_gram=self.config.save_gram,
            bins=header.bins,
            gram_dtype=self.config.gram_dtype,
        )
        if self.resume and os.path.exists(self.path):
            return RunWriter.resume(self.path, info, from_step=step)
        return RunWriter.create(self.path, info, overwrite=self.overwrite, large_gram=self.large_gram)

    def _run_config(self, method: str) -> dict:
        params = dict(self.params or {})
        return {
            "measure": self.config.to_dict(),
            "schedule": self.schedule.describe(),
            "method": method,
            "fit": {k: v for k, v in params.items() if isinstance(v, (int, float, str, type(None)))},
            "probes": self.probes.describe(),
            **self.run_config,
        }


def _is_chief() -> bool:
    """Under tf.distribute multi-worker training only the chief writes (TF_CONFIG's task)."""
    import json

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    try:
        conf = json.loads(raw)
    except ValueError:
        return True
    task = conf.get("task", {}) or {}
    kind, index = task.get("type"), int(task.get("index", 0) or 0)
    if kind in (None, "chief"):
        return True
    has_chief = "chief" in (conf.get("cluster", {}) or {})
    return kind == "worker" and index == 0 and not has_chief
