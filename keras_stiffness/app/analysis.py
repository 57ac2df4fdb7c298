"""Post hoc stiffness of a saved Keras model: the library side of ``kstiff analyze``.

Load a ``.keras`` or legacy ``.h5`` model (with clear errors for the usual ways that fails), check
that it fits the data, measure once with :func:`keras_stiffness.measure.measuring.measure`, and optionally write
the measurement as a one-row run file in the callback's HDF5 format.

TensorFlow, Keras and h5py are imported inside the functions.

Example:
    >>> model = load_model("model.keras")  # doctest: +SKIP
    >>> data = load_data("digits")  # doctest: +SKIP
    >>> data, note = check_model_fits(model, data)  # doctest: +SKIP
    >>> m, info, description = analyze(model, probes)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
import warnings
import zipfile
from typing import Dict, Iterator, List, Optional, Sequence

from keras_stiffness import nested

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_BUILTIN_CONTAINERS = ("Sequential", "Functional", "Model")


def parse_custom_objects(specs: Sequence[str]) -> Dict[str, object]:
    """Import ``module:attr`` specs into a ``custom_objects`` dict for ``keras.saving.load_model``.

    ``attr`` may be a class or function (registered under its ``__name__`` and, when it is registered
    with ``keras.saving.register_keras_serializable``, also under its registered name
    ``"package>Name"``) or a dict of such objects.

    Args:
        specs: Strings ``"package.module:attr"``.

    Returns:
        The merged dict.

    Raises:
        ValueError: A spec without ``:``, a module that cannot be imported, a missing attribute, or
            an attribute that is neither a class, a function nor a dict.

    Example:
        >>> sorted(parse_custom_objects(["collections:OrderedDict"]))
        ['OrderedDict']
    """
    out: Dict[str, object] = {}
    for spec in specs:
        module_name, sep, attr = str(spec).partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(
                f"Received: --custom-objects {spec!r}; expected 'module:attr', e.g. "
                "'my_package.layers:MyLayer' (a class or function) or 'my_package.layers:CUSTOM' (a dict)."
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(
                f"Received: --custom-objects {spec!r}, but module {module_name!r} cannot be imported "
                f"({type(exc).__name__}: {exc}); expected an importable module (check PYTHONPATH or the "
                "current directory)."
            ) from exc
        if not hasattr(module, attr):
            raise ValueError(
                f"Received: --custom-objects {spec!r}, but module {module_name!r} has no attribute "
                f"{attr!r}; expected a class, function or dict defined there."
            )
        value = getattr(module, attr)
        if isinstance(value, dict):
            out.update({str(k): v for k, v in value.items()})
        elif callable(value):
            out[getattr(value, "__name__", attr)] = value
            registered = _registered_name(value)
            if registered:
                out[registered] = value
        else:
            raise ValueError(
                f"Received: --custom-objects {spec!r}, an object of type {type(value).__name__}; "
                "expected a class, a function or a dict of them."
            )
    return out


def _registered_name(obj) -> Optional[str]:
    import keras

    try:
        name = keras.saving.get_registered_name(obj)
    except (TypeError, AttributeError, ValueError):
        return None
    return name if name and name != getattr(obj, "__name__", None) else None


def _one_line(text) -> str:
    """The whole message on one line (the CLI prints errors as one line; nothing is cut)."""
    return " ".join(str(text).split())


def read_model_config(path: str) -> Optional[dict]:
    """The model's configuration stored in a ``.keras`` archive or a legacy ``.h5`` file, or None."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                return None
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _walk(config) -> Iterator[dict]:
    if isinstance(config, dict):
        if "class_name" in config:
            yield config
        for value in config.values():
            yield from _walk(value)
    elif isinstance(config, list):
        for value in config:
            yield from _walk(value)


def unresolved_custom_objects(config: Optional[dict], custom_objects: Dict[str, object]) -> List[str]:
    """Names of custom classes in a ``.keras`` configuration that neither ``custom_objects`` nor
    Keras' registry resolves (entries whose ``module`` is None or outside Keras)."""
    import keras

    names = []
    for entry in _walk(config):
        if "module" not in entry:
            continue
        module = entry.get("module")
        if isinstance(module, str) and (module == "keras" or module.startswith(("keras.", "builtins"))):
            continue
        class_name = str(entry.get("class_name"))
        if class_name.startswith("__"):
            continue
        registered = entry.get("registered_name") or class_name
        if class_name in custom_objects or registered in custom_objects:
            continue
        if keras.saving.get_registered_object(registered) is not None:
            continue
        if registered not in names:
            names.append(registered)
    return names


def _check_model_file(path: str) -> None:
    """Fail clearly on a file that cannot hold a Keras model, before Keras tries it."""
    import h5py

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MODEL_SUFFIXES:
        raise ValueError(
            f"Received: model file {path!r} with suffix {suffix or '(none)'!r}; expected a Keras model "
            "saved as '.keras' (model.save('m.keras')) or legacy '.h5'. TensorFlow SavedModel folders "
            "are not supported by Keras 3's load_model."
        )
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"Received: {path!r}, which is not a .keras archive (not a zip file, or truncated); "
                "expected a file written by model.save('model.keras')."
            )
        return
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"Received: {path!r}, which is not an HDF5 file (wrong content, or truncated); expected "
            "a legacy Keras model written by model.save('model.h5')."
        )
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as exc:
        raise ValueError(
            f"Received: {path!r}, an HDF5 file that cannot be opened ({_one_line(exc)}); it may be "
            "truncated or corrupt. Expected a legacy Keras model written by model.save('model.h5')."
        ) from exc
    fmt = attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt is not None and "stiffness" in str(fmt).lower():
        raise ValueError(
            f"Received: {path!r}, a keras_stiffness run file (format {fmt!r}), not a model; expected a "
            "saved Keras model. Use 'kstiff inspect' or 'kstiff plot' for run files."
        )
    if "model_config" not in attrs:
        raise ValueError(
            f"Received: {path!r}, an HDF5 file without a Keras model (no 'model_config' attribute; "
            "maybe weights only, or other data); expected a model written by model.save('model.h5')."
        )


def load_model(path: str, *, unsafe: bool = False, custom_objects: Optional[Dict[str, object]] = None):
    """Load a saved Keras model, turning Keras' failures into clear messages.

    Args:
        path: A ``.keras`` archive or a legacy ``.h5`` file.
        unsafe: Allow arbitrary code (``Lambda`` layers): ``safe_mode=False``. Only for trusted files.
        custom_objects: Classes and functions the model needs (see :func:`parse_custom_objects`).

    Returns:
        The model, compiled when the file holds a compile configuration.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not a model file (text, truncated, a run file, weights only), a custom class that
            is not registered, a Lambda layer in safe mode, a subclassed model in legacy ``.h5``, or
            any other failure of Keras' loader (its message included).
    """
    import keras

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Received: model file {path!r}, which does not exist; expected a saved model.")
    if os.path.isdir(path):
        raise ValueError(
            f"Received: {path!r}, a directory; expected a '.keras' or '.h5' model file (Keras 3 cannot "
            "load TensorFlow SavedModel folders)."
        )
    _check_model_file(path)
    custom_objects = dict(custom_objects or {})
    try:
        with warnings.catch_warnings():
            # Keras warns when a saved optimizer's variables do not match; irrelevant for measuring.
            warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer")
            warnings.filterwarnings("ignore", message=r"Compiled the loaded model")
            return keras.saving.load_model(path, custom_objects=custom_objects, safe_mode=not unsafe)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(_load_failure(path, exc, custom_objects)) from exc


def _load_failure(path: str, exc: BaseException, custom_objects: Dict[str, object]) -> str:
    text = str(exc)
    if "safe_mode" in text or "unsafe_deserialization" in text:
        return (
            f"Model file {path!r} contains a Lambda layer (or other Python code), which safe mode "
            "refuses to load because it can run arbitrary code. Pass --unsafe if you trust the file."
        )
    config = read_model_config(path)
    missing = unresolved_custom_objects(config, custom_objects) if config else []
    unknown = re.search(r"Unknown (\w+): '([^']+)'", text)
    if unknown and unknown.group(2) not in missing:
        missing.append(unknown.group(2))
    top = (config or {}).get("class_name")
    if (
        path.lower().endswith((".h5", ".hdf5"))
        and top
        and top not in _BUILTIN_CONTAINERS
        and ("Layer count mismatch" in text or not missing or top in custom_objects)
    ):
        return (
            f"Model file {path!r} holds a subclassed model ({top}) in the legacy .h5 format, which "
            f"Keras 3 cannot rebuild ({_one_line(text)}). Save it as .keras instead "
            "(model.save('model.keras')) and register the class (keras.saving.register_keras_serializable)."
        )
    if missing:
        return (
            f"Model file {path!r} uses custom class(es) {', '.join(repr(m) for m in missing)} that are not "
            "registered. Pass --custom-objects module:attr (e.g. --custom-objects my_pkg.layers:MyLayer), "
            "repeatable, or register them with keras.saving.register_keras_serializable in an importable module."
        )
    return f"Could not load model {path!r}: {type(exc).__name__}: {_one_line(text)}"


# --------------------------------------------------------------------------------------------------
# Model vs data
# --------------------------------------------------------------------------------------------------


def check_model_fits(model, data) -> tuple:
    """Check that ``model`` accepts the data's inputs and has an output per class; reshape if needed.

    For data loaded with ``targets="regression"`` there are no classes: the model's outputs must
    hold as many values per example as the targets instead. For one-hot/soft labels
    (``data.targets_train``), one output per column.

    When the model declares a fully known input shape that differs from the data's but holds the same
    number of values per example (a model trained on flat 64-vectors of the 8x8 digits, say), the
    inputs (training and held-out, hence the probes drawn from them) are reshaped to the model's
    shape, in C order (row by row, as ``np.reshape`` and ``Flatten`` do), and a one-line note says so.
    Nothing is printed here: the caller shows the note.

    Args:
        model: A built Keras model.
        data: A :class:`~keras_stiffness.data.sources.DataSplits`.

    Returns:
        ``(data, note)``: ``data`` itself and None when the shapes match, else a copy with reshaped
        ``x_train``/``x_val`` and ``input_shape``, and the note (``"Note: reshaped the data's inputs
        (8, 8, 1) to the model's input shape (64) (same 64 values per example)."``).

    Raises:
        ValueError: "model expects inputs of shape X, data gives Y" (a different number of values per
            example, or a shape with unknown sizes that does not match), too few outputs for the
            data's classes, or (regression) outputs that do not match the targets' size.
    """
    from keras_stiffness.measure.adapters import call_model, model_input_shape, shape_text

    several = nested.is_nested(data.x_train)  # several inputs: the model call below checks them
    expected = None if several else model_input_shape(model)
    given = data.input_shape if several else tuple(data.input_shape)
    source = data.name
    note = None
    if expected is not None and _same_count_other_shape(expected, given):
        data = dataclasses.replace(
            data,
            x_train=data.x_train.reshape((len(data.x_train), *expected)),
            x_val=None if data.x_val is None else data.x_val.reshape((len(data.x_val), *expected)),
            input_shape=tuple(int(d) for d in expected),
        )
        note = (
            f"Note: reshaped the data's inputs {shape_text(given)} to the model's input shape "
            f"{shape_text(expected)} (same {math.prod(given)} values per example)."
        )
    elif expected is not None and (
        len(expected) != len(given) or any(e is not None and e != g for e, g in zip(expected, given))
    ):
        raise ValueError(
            f"Model {model.name!r} expects inputs of shape {shape_text(expected)}, but data {source!r} "
            f"gives {shape_text(given)}. Pass --data with inputs the model was trained on (same "
            "shape and preprocessing)."
        )
    out = call_model(
        model,
        nested.cut(data.x_train, 0, 2),
        source=f"data {source!r}",
        fix="Pass --data with inputs the model was trained on.",
    )
    targets = getattr(data, "targets_train", None)
    if getattr(data, "target_kind", "classes") == "regression":  # no classes: the outputs must hold the targets
        per_out, per_target = math.prod(out.shape[1:]), math.prod(targets.shape[1:])
        if per_out != per_target:
            raise ValueError(
                f"Model {model.name!r} returns outputs of shape {shape_text(out.shape[1:])} per example, but "
                f"data {source!r} has regression targets of shape {shape_text(targets.shape[1:])}; expected "
                "as many outputs as target values. Pass --data with the model's targets."
            )
        return data, note
    if out.ndim != 2:
        raise ValueError(
            f"Model {model.name!r} returns outputs of shape {shape_text(out.shape[1:])} per example; "
            "expected class scores of shape (n_classes,) for a classifier (for regression targets pass "
            "--targets regression)."
        )
    if targets is not None and out.shape[1] != targets.shape[1]:
        raise ValueError(
            f"Model {model.name!r} has {out.shape[1]} outputs, but data {source!r} has one-hot/soft labels "
            f"with {targets.shape[1]} columns; expected one output per column. Pass --data with the model's classes."
        )
    if out.shape[1] < data.n_classes:
        raise ValueError(
            f"Model {model.name!r} has {out.shape[1]} outputs, but data {source!r} has "
            f"{data.n_classes} classes; expected one output per class. Pass --data with the model's classes."
        )
    return data, note


def _same_count_other_shape(expected: tuple, given: tuple) -> bool:
    """True when ``expected`` is fully known, differs from ``given`` and has as many values."""
    if not all(d is not None and int(d) > 0 for d in expected):
        return False
    expected = tuple(int(d) for d in expected)
    return expected != tuple(given) and math.prod(expected) == math.prod(given)


# --------------------------------------------------------------------------------------------------
# Measuring and writing
# --------------------------------------------------------------------------------------------------


def analyze(
    model,
    probes,
    config=None,
    *,
    loss=None,
    memory_budget=None,
    block_size: Optional[int] = None,
    strategy=None,
    progress=None,
    out: Optional[str] = None,
    overwrite: bool = False,
    large_gram: bool = False,
    extra_config: Optional[dict] = None,
):
    """Measure the stiffness of ``model`` once on ``probes``, optionally into a one-row run file.

    Args:
        model: A Keras model (wrapped in a :class:`~keras_stiffness.measure.adapters.KerasAdapter`
            here, at the edge) or any :class:`~keras_stiffness.measure.adapters.StiffnessAdapter`.
        probes: A :class:`~keras_stiffness.data.probes.ProbeSet`.
        config: A :class:`~keras_stiffness.measure.measuring.MeasureConfig` (default settings when None).
        loss: Loss to differentiate; default the model's compiled loss.
        memory_budget, block_size, strategy, progress: As for
            :func:`~keras_stiffness.measure.measuring.measure`.
        out: Write the measurement as a one-row run file (the StiffnessCallback's format) here. With
            ``config.save_gram`` the Gram matrix is written block by block as it is formed. The file
            is written beside ``out`` and moved into place only when complete, so a failed
            measurement leaves an existing file as it was. Under several workers only the chief writes.
        overwrite: Replace ``out`` if it exists.
        large_gram: With ``config.save_gram``: allow a Gram matrix over 2 GiB in the file.
        extra_config: More JSON-ready items for the run file's configuration.

    Returns:
        ``(Measurement, MeasureInfo, description)`` with the adapter's model description. The
        measurement's ``seconds`` is the wall time up to just before its row is written.

    Raises:
        ValueError: No loss (uncompiled model and ``loss`` None), unknown layer names, bad probes,
            ``save_gram`` under several workers.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    import time

    from keras_stiffness.measure.adapters import as_adapter
    from keras_stiffness.measure.config import MeasureConfig
    from keras_stiffness.measure.distribute import is_chief, worker_share
    from keras_stiffness.measure.measuring import measure, set_cost

    start = time.perf_counter()
    config = config if config is not None else MeasureConfig()
    if config.save_gram and worker_share(strategy)[1] > 1:
        raise ValueError(
            "Received save_gram with several workers; each worker forms only its share of the Gram blocks, "
            "so no process holds the matrix to write. Fix: run one process for --save-gram."
        )
    adapter = as_adapter(model, loss=loss)
    adapter.check_probes(probes.x, probes.targets)
    description = adapter.describe()
    record = None
    if out is not None and is_chief(strategy):
        run_config = {"measure": config.to_dict(), "probes": probes.describe(), **(extra_config or {})}
        record = _RunRecord(out, probes, description, config, run_config, overwrite, large_gram)
    try:
        m, info = measure(
            adapter,
            probes,
            config,
            memory_budget=memory_budget,
            block_size=block_size,
            strategy=strategy,
            progress=progress,
            on_start=record.start if record else None,
            on_block=record.block if record and config.save_gram else None,
        )
        set_cost(m, info)
        m.seconds = time.perf_counter() - start
        if record is not None:
            record.finish(m)
    except BaseException:
        if record is not None:
            record.discard()
        raise
    return m, info, description


class _RunRecord:
    """A one-row run file written while the measurement streams, moved into place when complete."""

    def __init__(
        self, path: str, probes, description: dict, config, run_config: dict, overwrite: bool, large_gram: bool
    ) -> None:
        from keras_stiffness.store.layout import check_gram_size
        from keras_stiffness.store.writer import EXISTS_FIX
        from keras_stiffness.validation import check_writable

        check_writable(path, overwrite=overwrite, exists_fix=EXISTS_FIX)
        if config.save_gram:
            check_gram_size(probes.n, config.gram_dtype, large_gram=large_gram)
        self.large_gram = large_gram
        self.path, self.probes, self.description = path, probes, description
        self.config, self.run_config = config, run_config
        folder, name = os.path.split(os.path.abspath(path))
        self.partial = os.path.join(folder, f".{name}.{os.getpid()}.partial")
        self.writer = None
        self.row = None

    def start(self, header) -> None:
        from keras_stiffness.callback.recording import make_run_info
        from keras_stiffness.store.writer import RunWriter

        info = make_run_info(
            header,
            self.probes,
            self.description,
            rules=header.rules,
            config=self.run_config,
            metric=self.config.metric,
            min_count=self.config.min_count,
            save_gram=self.config.save_gram,
            bins=header.bins,
            gram_dtype=self.config.gram_dtype,
        )
        self.writer = RunWriter.create(self.partial, info, overwrite=True, large_gram=self.large_gram)
        if self.config.save_gram:
            self.row = self.writer.begin_gram()

    def block(self, block) -> None:
        self.row.write(block.rows.start, block.cols.start, block.total)

    def finish(self, m) -> None:
        self.writer.append(m)
        self.writer.close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if os.path.exists(self.partial):
            os.remove(self.partial)


def analysis_result(
    m,
    probes,
    description: dict,
    *,
    model_path: str,
    input_shape: Optional[tuple],
    metric: str,
    run_file: Optional[str] = None,
) -> dict:
    """The JSON-ready result of ``kstiff analyze`` (see :mod:`keras_stiffness.app.report` for the shape).

    Returns:
        ``{"model", "probes", "measures", "metric", "zero_grad", "pair_sets", "layers", "run_file"}``
        with NaN as ``None``.
    """
    from keras_stiffness.app.report import clean, measurement_to_dict

    d = measurement_to_dict(m, probes.class_names)
    model_info = {k: v for k, v in description.items() if k != "summary"}
    model_info.update(path=model_path, input_shape=list(input_shape) if input_shape is not None else None)
    return clean(
        {
            "model": model_info,
            "probes": probes.describe(),
            "measures": list(m.measures),
            "metric": metric,
            "zero_grad": d["zero_grad"],
            "pair_sets": d["pair_sets"],
            "layers": d["layers"],
            "run_file": run_file,
        }
    )
