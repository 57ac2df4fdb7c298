"""Measurements as JSON-ready dicts and as plain-text tables (for ``kstiff analyze`` and ``inspect``).

NumPy only. Every float goes through :func:`clean`, so NaN becomes ``None`` (JSON ``null``) and NumPy
scalars become Python numbers; the result of :func:`measurement_to_dict` can be passed straight to
``json.dumps``.

The dict of one measurement (the shape scripts rely on)::

    {"step": 0, "epoch": 0.0, "train_loss": ..., "val_loss": null, "learning_rate": ...,
     "wall_time": ..., "zero_grad": 0,
     "pair_sets": {"train-train": {"sign": {"class_matrix": [[...]], "within": x, "between": y,
                                            "mean": z, "pairs": n, "per_class": {"0": ...}},
                                   "cos": {...}},
                   "train-val": ..., "val-val": ...},
     "layers": [{"name": "input", "critical_length": xi, "critical_length_fit": xi_fit,
                 "stiffness_sign": null, "stiffness_cos": null, ...},
                {"name": "dense", ...}, ...]}

``layers`` lists the representation spaces (``"input"`` first) with their critical length ξ, merged
with the layers that own weights and their per-layer stiffness (train–train mean of the layer's own
Gram block); entries missing on one side are ``null``.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from keras_stiffness.math.record import TAGS, Measurement

#: The measure whose critical length fills ``critical_length`` / ``critical_length_fit``.
PRIMARY_MEASURE = "sign"

#: What reports say of a run without classes (regression targets).
NO_CLASSES = "no classes (regression targets): no class matrices, within or between; mean over all pairs"
_MAX_MATRIX_CLASSES = 20  # class matrices wider than this are left out of text tables


def clean(value: Any) -> Any:
    """Recursively turn NumPy values into plain Python ones and NaN/Inf into ``None``.

    Example:
        >>> clean({"a": np.float32("nan"), "b": [np.int64(2), 0.5]})
        {'a': None, 'b': [2, 0.5]}
    """
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _primary(measures: Sequence[str]) -> Optional[int]:
    if not measures:
        return None
    return list(measures).index(PRIMARY_MEASURE) if PRIMARY_MEASURE in measures else 0


def pair_sets_to_dict(m: Measurement, class_names: Sequence[str]) -> Dict[str, dict]:
    """``{pair set: {measure: {class_matrix, within, between, mean, pairs, per_class}}}``.

    ``per_class`` maps each class name to its diagonal entry (within-class stiffness of that class).
    """
    names = [str(c) for c in class_names]
    out: Dict[str, dict] = {}
    for p, pair_set in enumerate(m.pair_sets):
        entry = {}
        for k, measure in enumerate(m.measures):
            matrix = np.asarray(m.class_matrix[p, k])
            diag = np.diag(matrix) if matrix.ndim == 2 else np.zeros(0)
            entry[measure] = {
                "class_matrix": clean(matrix),
                "within": clean(m.within[p, k]),
                "between": clean(m.between[p, k]),
                "mean": clean(m.mean[p, k]),
                "pairs": int(m.pairs[p]),
                "per_class": {(names[c] if c < len(names) else str(c)): clean(diag[c]) for c in range(len(diag))},
            }
        out[pair_set] = entry
    return out


def layers_to_list(m: Measurement) -> List[dict]:
    """One entry per representation space and per layer with weights (see the module docstring)."""
    spaces = list(m.spaces)
    names = [s for s in spaces if s == "input"] + list(m.layers)
    names += [s for s in spaces if s not in names]  # forward order; spaces without weights last
    p_train = list(m.pair_sets).index("train-train") if "train-train" in m.pair_sets else None
    primary = _primary(m.measures)
    rows = []
    for name in names:
        row: Dict[str, Any] = {"name": name, "critical_length": None, "critical_length_fit": None}
        if name in spaces:
            r = spaces.index(name)
            if primary is not None:
                row["critical_length"] = clean(m.critical_length[r, primary])
                row["critical_length_fit"] = clean(m.critical_length_fit[r, primary])
            for k, measure in enumerate(m.measures):
                row[f"critical_length_{measure}"] = clean(m.critical_length[r, k])
                row[f"critical_length_fit_{measure}"] = clean(m.critical_length_fit[r, k])
        li = list(m.layers).index(name) if name in m.layers else None
        for k, measure in enumerate(m.measures):
            for key, table in (("stiffness", m.layer_mean), ("within", m.layer_within), ("between", m.layer_between)):
                value = None
                if li is not None and p_train is not None:
                    value = clean(table[li, p_train, k])
                row[f"{key}_{measure}"] = value
        row["has_weights"] = li is not None
        rows.append(row)
    return rows


def measurement_to_dict(m: Measurement, class_names: Sequence[str]) -> dict:
    """A measurement as a JSON-ready dict: its tags, ``pair_sets`` and ``layers``.

    Args:
        m: The measurement.
        class_names: One name per class (keys of ``per_class``).

    Returns:
        The dict described in the module docstring (NaN as ``None``).

    Example:
        >>> from keras_stiffness.math.summarize import summarize
        >>> g = np.array([[1.0, 0.0], [0.9, 0.1], [-0.2, 1.0], [-0.3, 0.9]])
        >>> m = summarize(g @ g.T, None, np.array([0, 0, 1, 1]), np.zeros(4, dtype=bool), 2)
        >>> d = measurement_to_dict(m, ["0", "1"])
        >>> d["pair_sets"]["train-train"]["sign"]["within"]
        1.0
    """
    out: Dict[str, Any] = {tag: clean(getattr(m, tag)) for tag in TAGS}
    out["step"] = int(m.step)
    out["zero_grad"] = int(m.zero_grad)
    out["pair_sets"] = pair_sets_to_dict(m, class_names)
    out["layers"] = layers_to_list(m)
    return out


# --------------------------------------------------------------------------------------------------
# Text tables
# --------------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3f", width: int = 0) -> str:
    """A number for a table; ``None``/NaN as ``-``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        text = "-"
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        text = f"{int(value):,}"
    else:
        text = format(float(value), spec)
    return text.rjust(width) if width else text


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """Align columns: the first ``left`` columns left-aligned, the others right-aligned."""
    cols = [list(header)] + [list(r) for r in rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
    lines = []
    for r in cols:
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pair_set_table(pair_sets: Mapping[str, dict], measures: Sequence[str]) -> str:
    """Within/between/mean per pair set and measure, with pair counts."""
    header = ["pair set"]
    for measure in measures:
        header += [f"within {measure}", f"between {measure}", f"mean {measure}"]
    header.append("pairs")
    rows = []
    for name, entry in pair_sets.items():
        row = [name]
        for measure in measures:
            e = entry[measure]
            row += [fmt(e["within"]), fmt(e["between"]), fmt(e["mean"])]
        first = entry[measures[0]] if measures else {"pairs": 0}
        row.append(fmt(first["pairs"]))
        rows.append(row)
    return table(header, rows)


def layer_table(layers: Sequence[Mapping[str, Any]], measures: Sequence[str]) -> str:
    """ξ per representation space and per-layer stiffness per weight layer."""
    header = ["layer"]
    header += [f"xi {m}" for m in measures] + [f"xi fit {m}" for m in measures]
    header += [f"stiffness {m}" for m in measures]
    rows = []
    for row in layers:
        cells = [row["name"]]
        cells += [fmt(row.get(f"critical_length_{m}")) for m in measures]
        cells += [fmt(row.get(f"critical_length_fit_{m}")) for m in measures]
        cells += [fmt(row.get(f"stiffness_{m}")) for m in measures]
        rows.append(cells)
    return table(header, rows)


def class_matrix_table(matrix: Sequence[Sequence[Any]], class_names: Sequence[str]) -> str:
    """A class matrix with class names on both axes (rows: the step's class; columns: the effect's)."""
    names = [str(c) for c in class_names]
    rows = [[names[a]] + [fmt(v, ".2f") for v in matrix[a]] for a in range(len(matrix))]
    return table(["step \\ effect"] + names[: len(matrix)], rows)


def analysis_text(result: Mapping[str, Any]) -> str:
    """The readable report of ``kstiff analyze`` from its JSON-ready dict."""
    model, probes = result["model"], result["probes"]
    measures = result.get("measures") or list(next(iter(result["pair_sets"].values()), {}))
    lines = [
        f"Model: {model.get('name')} ({model.get('class')}), {fmt(model.get('n_params'))} trainable "
        f"parameters, loss {model.get('loss')}",
        f"Probes: {probes.get('source') or 'data'}: {probes['n_train']} train + {probes['n_val']} "
        f"held-out, {probes['n_classes']} classes, seed {probes['seed']}",
    ]
    if result.get("zero_grad"):
        lines.append(f"Note: {result['zero_grad']} probe(s) have a zero gradient (stiffness 0).")
    lines += [
        "",
        "Stiffness by pair set (class-matrix summaries; self-pairs excluded):",
        pair_set_table(result["pair_sets"], measures),
    ]
    lines += [
        "",
        "Layers: critical length xi (distance 1 - cos where binned stiffness first crosses 0; "
        "'fit': zero of a line fitted to within-class stiffness) and per-layer stiffness "
        "(train-train mean of the layer's own weights):",
        layer_table(result["layers"], measures),
    ]
    class_names = probes.get("class_names") or []
    first = next(iter(result["pair_sets"]), None)
    if measures and first and 0 < len(class_names) <= _MAX_MATRIX_CLASSES:
        measure = measures[0]
        lines += [
            "",
            f"Class matrix, {first}, {measure} stiffness (other pair sets and measures: --format json):",
            class_matrix_table(result["pair_sets"][first][measure]["class_matrix"], class_names),
        ]
    elif class_names:
        lines += ["", f"({len(class_names)} classes: class matrices are in --format json.)"]
    elif probes.get("n_classes") == 0:
        lines += ["", f"Classes: {NO_CLASSES}."]
    return "\n".join(lines)


def inspect_row(d: Mapping[str, Any], measures: Sequence[str], classes: bool = True) -> List[str]:
    """One line of the ``kstiff inspect`` table from :func:`measurement_to_dict` output (without
    ``classes``: the mean over all pairs instead of within/between)."""
    row = [
        str(d["step"]),
        fmt(d["epoch"], ".3g"),
        fmt(d["train_loss"], ".4g"),
        fmt(d["val_loss"], ".4g"),
        fmt(d["learning_rate"], ".3g"),
    ]
    for pair_set in ("train-train", "train-val"):
        entry = d["pair_sets"].get(pair_set)
        for measure in measures:
            e = entry.get(measure) if entry else None
            keys = ("within", "between") if classes else ("mean",)
            row += [fmt(e[key]) if e else "-" for key in keys]
    xi = [layer.get("critical_length") for layer in d["layers"] if layer.get("critical_length") is not None]
    row.append(fmt(min(xi)) + "-" + fmt(max(xi)) if xi else "-")
    return row


def inspect_header(measures: Sequence[str], classes: bool = True) -> List[str]:
    """Column names matching :func:`inspect_row`."""
    header = ["step", "epoch", "train loss", "val loss", "lr"]
    for short in ("tt", "tv"):
        for measure in measures:
            if classes:
                header += [f"{short} within {measure}", f"{short} between {measure}"]
            else:
                header += [f"{short} mean {measure}"]
    header.append(f"xi {PRIMARY_MEASURE} range")
    return header


def inspect_text(run: Mapping[str, Any], measurements: Sequence[Mapping[str, Any]]) -> str:
    """The readable report of ``kstiff inspect`` from its JSON-ready parts."""
    measures = list(run.get("measures") or [])
    probes = run.get("probes") or {}
    model = run.get("model") or {}
    train = run.get("train") or {}
    lines = [f"Run file: {run.get('path')} (format version {run.get('format_version')})"]
    if model:
        lines.append(
            f"Model: {model.get('name')} ({model.get('class')}), {fmt(model.get('n_params'))} "
            f"trainable parameters, loss {run.get('loss') or model.get('loss')}"
        )
    if train:
        lines.append("Training: " + ", ".join(f"{k}={v}" for k, v in train.items()))
    if probes:
        lines.append(
            f"Probes: {probes.get('source') or 'data'}: {probes.get('n_train')} train + "
            f"{probes.get('n_val')} held-out, {probes.get('n_classes')} classes, seed "
            f"{probes.get('seed')}, hash {str(probes.get('hash', ''))[:12]}"
        )
    classes = bool(run.get("class_names"))
    if classes:
        lines.append(f"Classes: {', '.join(map(str, run.get('class_names') or []))}")
    else:
        lines.append(f"Classes: {NO_CLASSES}")
    lines.append(f"Pair sets: {', '.join(run.get('pair_sets') or [])}; measures: {', '.join(measures)}")
    lines.append(f"Layers with weights: {', '.join(run.get('layers') or []) or '-'}")
    lines.append(
        f"Distance spaces: {', '.join(run.get('spaces') or []) or '-'} (metric "
        f"{run.get('metric')}, {run.get('bins')} bins, min_count {run.get('min_count')})"
    )
    schedule = run.get("schedule")
    if schedule:
        lines.append("Schedule: " + ", ".join(f"{k}={v}" for k, v in schedule.items() if v is not None))
    lines.append(f"Measurements: {len(measurements)} (tt = train-train, tv = train-val)")
    if measurements:
        rows = [inspect_row(d, measures, classes) for d in measurements]
        lines += ["", table(inspect_header(measures, classes), rows, left=0)]
    return "\n".join(lines)


def train_summary_text(summary: Mapping[str, Any]) -> str:
    """The short summary ``kstiff train`` prints for one run (from :func:`keras_stiffness.app.train.train_run`)."""
    train, init, end, final = summary["train"], summary["init"], summary["end"], summary["final"]
    lines = [
        f"Run {pathlib.Path(summary['run_dir']).name}: {summary['model']['name']} on {train['data']}, "
        f"{train['epochs']} epochs ({summary['steps']} steps), lr {train['lr']:g}, batch "
        f"{train['batch_size']}; {summary['n_measurements']} measurements, "
        f"{summary['train_seconds']:.0f} s",
    ]
    rows = [
        ["train loss", fmt(init["train_loss"], ".4g"), fmt(end["train_loss"], ".4g")],
        ["val loss", fmt(init["val_loss"], ".4g"), fmt(end["val_loss"], ".4g")],
    ]
    keys = [
        k
        for k in init
        if k.endswith((" sign", " cos")) and (" within " in k or " between " in k) and not k.startswith("val-val")
    ]  # val-val is in summary.json
    rows += [[k, fmt(init[k], "+.3f"), fmt(end.get(k), "+.3f")] for k in keys]
    xi_init, xi_end = init.get("critical_length") or {}, end.get("critical_length") or {}
    rows += [[f"xi {space} (sign)", fmt(xi_init.get(space)), fmt(xi_end.get(space))] for space in xi_init]
    lines.append(table(["", f"init (step {init['step']})", f"end (epoch {fmt(end['epoch'], '.3g')})"], rows))
    if final.get("min_val_loss") is not None:
        lines.append(
            f"Val loss: min {fmt(final['min_val_loss'], '.4g')} at epoch {final['min_val_loss_epoch']}, "
            f"final {fmt(final['val_loss'], '.4g')}; val accuracy {fmt(final['val_accuracy'], '.3f')}"
        )
    lines.append(f"Run file: {summary['run_file']}")
    lines.append(f"Summary: {summary['summary_file']}")
    if summary.get("figures"):
        lines.append(
            f"Figures: {len(summary['figures'])} PNG in {summary['run_dir']}/ ("
            + ", ".join(pathlib.Path(p).name for p in summary["figures"])
            + ")"
        )
    return "\n".join(lines)
