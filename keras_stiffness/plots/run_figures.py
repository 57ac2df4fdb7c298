"""Figures of one run file: the paper's class matrices, stiffness along training, vs distance, ξ, layers.

Axis letters ``T, P, M, C, L, R, B`` are those of :mod:`keras_stiffness.math.record` (``T``:
measurements in the run). How figures are drawn and the reading conventions shared by every figure
(epoch and train-loss axes) are in :mod:`keras_stiffness.plots.common`.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from keras_stiffness.math.record import Measurement
from keras_stiffness.plots.common import (
    DPI,
    MEASURE_NAMES,
    PAIR_SET_COLORS,
    RunData,
    beyond_handle,
    check_measure,
    current_train_loss,
    depth_colors,
    distance_label,
    distance_top,
    empty_note,
    epoch_axis,
    fmt,
    is_finite,
    load_run,
    loss_axis,
    new_figure,
    plain_ticks,
    plot_xi,
    pretty_pair_set,
    run_label,
    save,
    style,
    when,
    when_parts,
    xi_limits,
    zero_line,
)

__all__ = [
    "DPI",
    "FILES",
    "PAIR_SET_COLORS",
    "RunData",
    "beyond_handle",
    "build_figures",
    "class_matrix_figure",
    "critical_length_figure",
    "current_train_loss",
    "depth_colors",
    "distance_figure",
    "distance_label",
    "distance_top",
    "empty_note",
    "epoch_axis",
    "layer_figure",
    "load_run",
    "loss_axis",
    "plot_run",
    "plot_sweep",
    "plot_xi",
    "run_label",
    "save",
    "style",
    "training_figure",
    "when",
    "xi_limits",
    "zero_line",
]

FILES = ("class_matrices", "stiffness_vs_training", "stiffness_vs_distance", "critical_length", "layer_stiffness")


# ---------------------------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _opened(run_or_path) -> Iterator[object]:
    """A :class:`~keras_stiffness.store.reader.Run` as given (left open), or opened from a path (then closed)."""
    if hasattr(run_or_path, "series") and hasattr(run_or_path, "measurement"):
        yield run_or_path
        return
    if not isinstance(run_or_path, (str, os.PathLike)):
        raise TypeError(
            f"Received: run_or_path of type {type(run_or_path).__name__}; expected a path to a "
            f"run file (str or os.PathLike) or an open Run from keras_stiffness.store.reader.open_run."
        )
    from keras_stiffness.store.reader import open_run

    with open_run(run_or_path) as run:
        yield run


def _resolve_at(at: Optional[Sequence[int]], n: int) -> List[int]:
    """Measurement indices to draw in detail: default first, middle, last (deduplicated, sorted)."""
    if at is None:
        return sorted({0, (n - 1) // 2, n - 1})
    if isinstance(at, np.ndarray) and at.ndim == 1:
        at = at.tolist()
    if isinstance(at, (int, np.integer, str)) or not isinstance(at, Sequence) or len(at) == 0:
        raise ValueError(f"Received: at={at!r}; expected a non-empty sequence of measurement indices, e.g. at=[0, -1].")
    out = []
    for i in at:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise ValueError(
                f"Received: at={list(at)!r}; expected integer measurement indices in "
                f"[{-n}, {n}) for a run with {n} measurement(s)."
            )
        out.append(int(i) % n)
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------- figures


def class_matrix_figure(data: RunData, at: Sequence[int], measure: str):
    """Figure 6: class stiffness matrices (rows: train–train, train–val; columns: measurements ``at``)."""
    import matplotlib

    k = check_measure(measure, data.measures, f"run {data.name!r}")
    sets = [p for p in ("train-train", "train-val") if p in data.pair_sets]
    c = len(data.class_names)
    if c == 0:
        fig = new_figure(6.4, 4.8)
        ax = fig.subplots()
        ax.set_axis_off()
        empty_note(ax, "no classes (regression targets):\nno class stiffness matrices")
        fig.suptitle(f"{data.name}: class stiffness matrices, {MEASURE_NAMES[measure]}")
        return fig
    side = 3.3 if c <= 30 else 4.2
    fig = new_figure(1.4 + side * len(at), 0.9 + (side + 0.5) * len(sets))
    axes = fig.subplots(len(sets), len(at), squeeze=False)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.7")
    step = max(1, math.ceil(c / 20))
    ticks = np.arange(0, c, step)
    tick_size = 9 if c <= 10 else (8 if c <= 20 else 7)
    image = None
    for r, pair_set in enumerate(sets):
        p = data.pair_sets.index(pair_set)
        for col, i in enumerate(at):
            ax = axes[r, col]
            matrix = np.asarray(data.rows[i].class_matrix[p, k], dtype=np.float64)
            image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
            if c <= 12:
                for a in range(c):
                    for b in range(c):
                        v = matrix[a, b]
                        ax.text(
                            b,
                            a,
                            "n/a" if not np.isfinite(v) else f"{v:.2f}",
                            ha="center",
                            va="center",
                            fontsize=6.5 if c > 6 else 8,
                            color="white" if abs(v) > 0.6 else "black",
                            in_layout=False,
                            clip_on=True,
                        )
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            names = [data.class_names[t] for t in ticks]
            ax.set_xticklabels(names if r == len(sets) - 1 else [], rotation=90, fontsize=tick_size)
            ax.set_yticklabels(names if col == 0 else [], fontsize=tick_size)
            if r == len(sets) - 1:
                ax.set_xlabel("class of X2 (measured)")
            if col == 0:
                ax.set_ylabel(f"{pretty_pair_set(pair_set)}\nclass of X1 (step taken)")
            parts = when_parts(data.tags, i)
            ax.set_title(", ".join(parts[:-1]) + "\n" + parts[-1], fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=f"mean {MEASURE_NAMES[measure]}")
    fig.suptitle(
        f"{data.name}: class stiffness matrices C(a, b), {MEASURE_NAMES[measure]}"
        + ("" if c <= 12 else f" ({c} classes, every {step}th labelled)" if step > 1 else "")
        + "\ngrey (n/a): no pairs of that class pair"
    )
    return fig


def training_figure(data: RunData, measure: str):
    """Within/between stiffness vs epoch and vs train loss, per pair set; the chosen measure solid."""
    from matplotlib.lines import Line2D

    check_measure(measure, data.measures, f"run {data.name!r}")
    names = ("within", "between") if data.class_names else ("mean",)
    fig = new_figure(11.5, 3.5 * len(names))
    axes = fig.subplots(len(names), 2, sharey="row", sharex="col", squeeze=False)
    epoch, loss = data.tags["epoch"], current_train_loss(data.tags)
    has_loss = bool(np.isfinite(loss).any())
    styles = {m: ("-" if m == measure else ":") for m in data.measures}
    for row, name in enumerate(names):
        values = data.series[name]  # (T, P, M)
        for col, x in enumerate((epoch, loss)):
            ax = axes[row, col]
            zero_line(ax)
            if col == 1 and not has_loss:
                empty_note(ax, "no train loss recorded")
                ax.tick_params(axis="x", labelbottom=False)
                continue
            for p, pair_set in enumerate(data.pair_sets):
                for k, m in enumerate(data.measures):
                    chosen = m == measure
                    # Against loss, points are not joined: the loss is not monotone in time (batch
                    # noise), and lines in time order would zigzag across the panel.
                    ax.plot(
                        x,
                        values[:, p, k],
                        ls=styles[m] if col == 0 else "none",
                        marker="o",
                        ms=(4 if chosen else 4.5) * (1.0 if col == 0 else 0.8),
                        mfc=None if chosen else "white",
                        color=PAIR_SET_COLORS[pair_set],
                        lw=1.8 if chosen else 1.2,
                        alpha=(1.0 if chosen else 0.8) * (1.0 if col == 0 else 0.7),
                    )
            ax.grid(alpha=0.3)
        axes[row, 0].set_ylabel(f"{name}-class stiffness" if name != "mean" else "stiffness, all pairs (no classes)")
    epoch_axis(axes[-1, 0], epoch)
    if has_loss:
        loss_axis(axes[-1, 1], loss)
    axes[0, 0].set_title("vs epoch")
    missing = int(np.isnan(loss).sum())
    axes[0, 1].set_title(
        "vs train loss"
        + (
            f" ({missing} measurement{'s' * (missing > 1)} without a recorded loss left out)"
            if has_loss and missing
            else ""
        )
    )
    sets = [
        Line2D([], [], color=PAIR_SET_COLORS[p], marker="o", ms=4, label=pretty_pair_set(p)) for p in data.pair_sets
    ]
    kinds = [
        Line2D(
            [],
            [],
            color="black",
            ls=styles[m],
            marker="o",
            mfc=None if m == measure else "white",
            label=m + " (chosen)" * (m == measure),
        )
        for m in data.measures
    ]
    fig.legend(handles=sets, loc="outside right upper", title="pair set")
    fig.legend(handles=kinds, loc="outside right center", title="measure")
    fig.suptitle(f"{data.name}: stiffness along training")
    return fig


def _xi(value: float, top: float) -> str:
    if not is_finite(value):
        return "undefined"
    return fmt(value) + (" ▲ beyond range" if value > top else "")


def _bin_values(m: Measurement, r: int, k: int, min_count: int):
    """Bin centres and mean stiffness of space ``r``; bins with fewer than ``min_count`` pairs -> NaN."""
    edges = np.asarray(m.distance_edges[r], dtype=np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    mean = np.array(m.curve_mean[r, k], dtype=np.float64)
    mean[np.asarray(m.curve_count[r]) < min_count] = np.nan
    return centres, mean


def distance_figure(data: RunData, measure: str):
    """Figure 9: stiffness vs distance per space, last measurement solid, first dashed, ξ marked."""
    from matplotlib.lines import Line2D

    k = check_measure(measure, data.measures, f"run {data.name!r}")
    first, last = 0, data.n - 1
    colors = depth_colors(data.spaces)
    fig = new_figure(13.0, 7.0)
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    zero_line(ax)
    handles = []
    for r, space in enumerate(data.spaces):
        col = colors[space]
        if first != last:
            x, y = _bin_values(data.rows[first], r, k, data.min_count)
            ax.plot(x, y, "--", color=col, lw=1.2, alpha=0.8)
        x, y = _bin_values(data.rows[last], r, k, data.min_count)
        xi = float(data.rows[last].critical_length[r, k])
        xi_fit = float(data.rows[last].critical_length_fit[r, k])
        (line,) = ax.plot(
            x,
            y,
            "-",
            marker="o",
            ms=3.5,
            color=col,
            lw=1.8,
            label=f"{space}: ξ = {_xi(xi, data.dist_top)} (fit {_xi(xi_fit, data.dist_top)})",
        )
        handles.append(line)
        if is_finite(xi):
            ax.axvline(xi, color=col, ls=":", lw=1.5)
        counts = np.asarray(data.rows[last].curve_count[r], dtype=np.float64)
        ax_n.step(x, np.where(counts > 0, counts, np.nan), where="mid", color=col, lw=1.2)
    ax.set_ylabel(f"mean {MEASURE_NAMES[measure]}\n(train–train pairs)")
    ax.grid(alpha=0.3)
    styles = [
        Line2D(
            [], [], color="0.3", ls="-", marker="o", ms=3.5, label="last: " + ",\n".join(when_parts(data.tags, last))
        )
    ]
    if first != last:
        styles.append(Line2D([], [], color="0.3", ls="--", label="first: " + ",\n".join(when_parts(data.tags, first))))
    styles.append(Line2D([], [], color="0.3", ls=":", label="ξ (zero crossing, last)"))
    fig.legend(handles=handles, loc="outside right upper", title="space: critical length ξ (last)")
    fig.legend(handles=styles, loc="outside right lower", title="line style", fontsize=8)
    ax_n.axhline(max(data.min_count, 1), color="0.4", ls="--", lw=1)
    ax_n.text(
        1.0,
        max(data.min_count, 1),
        f"min_count = {data.min_count} ",
        va="bottom",
        ha="right",
        transform=ax_n.get_yaxis_transform(),
        fontsize=8,
        color="0.3",
    )
    ax_n.set_yscale("log")
    ax_n.set_ylabel("pairs per bin\n(last)")
    ax_n.set_xlabel(distance_label(data.metric))
    ax_n.grid(alpha=0.3)
    if data.metric == "euclidean":
        tops = [float(data.rows[last].distance_edges[r, -1]) for r in range(len(data.spaces))]
        if max(tops) / max(min(tops), 1e-300) >= 10:
            ax_n.set_xscale("log")
            plain_ticks(ax_n.xaxis)
            ax_n.set_xlabel(distance_label(data.metric) + " (log)")
    else:  # 0 to the last occupied bin (ReLU features never get past 1 − cos = 1)
        edges = [
            data.rows[i].distance_edges[r, 1:][data.rows[i].curve_count[r] > 0]
            for i in {first, last}
            for r in range(len(data.spaces))
        ]
        occupied = np.concatenate(edges) if edges else np.zeros(0)
        ax_n.set_xlim(0.0, float(occupied.max()) if occupied.size else 2.0)
    fig.suptitle(
        f"{data.name}: stiffness vs distance\n"
        f"{MEASURE_NAMES[measure]}; bins with fewer than {data.min_count} pairs left out"
    )
    return fig


def critical_length_figure(data: RunData, measure: str):
    """ξ per space along training: zero crossing (solid) and linear fit (dashed); NaN left as gaps."""
    from matplotlib.lines import Line2D

    k = check_measure(measure, data.measures, f"run {data.name!r}")
    colors = depth_colors(data.spaces)
    fig = new_figure(10.0, 5.5)
    ax = fig.subplots()
    epoch = data.tags["epoch"]
    xi, xi_fit = data.series["critical_length"][:, :, k], data.series["critical_length_fit"][:, :, k]
    beyond = 0
    for r, space in enumerate(data.spaces):
        beyond += plot_xi(
            ax, epoch, xi[:, r], data.dist_top, ls="-", marker="o", ms=4, color=colors[space], lw=1.8, label=space
        )
        beyond += plot_xi(
            ax, epoch, xi_fit[:, r], data.dist_top, ls="--", marker="s", ms=3.5, mfc="none", color=colors[space], lw=1.2
        )
    epoch_axis(ax, epoch)
    if not (np.isfinite(xi).any() or np.isfinite(xi_fit).any()):
        empty_note(ax, "ξ undefined at every measurement\n(the curves never cross 0)")
    else:
        xi_limits(ax, np.concatenate([xi.ravel(), xi_fit.ravel()]), data.dist_top)
    ax.set_ylabel(f"critical length ξ\n({distance_label(data.metric)})")
    ax.grid(alpha=0.3)
    fig.legend(handles=ax.get_legend_handles_labels()[0], loc="outside right upper", title="space")
    kinds = [
        Line2D([], [], color="black", ls="-", marker="o", ms=4, label="zero crossing"),
        Line2D([], [], color="black", ls="--", marker="s", mfc="none", ms=3.5, label="linear fit\n(within-class)"),
    ]
    if beyond:
        kinds.append(beyond_handle(data.dist_top))
    fig.legend(handles=kinds, loc="outside right lower", title="ξ estimator")
    # Two lines: a one-line title this long runs under the legend column of a model with many layers.
    fig.suptitle(f"{data.name}: critical length along training\n{MEASURE_NAMES[measure]} (gaps: ξ undefined)")
    return fig


def layer_figure(data: RunData, measure: str):
    """Per-layer within/between stiffness (train–train, each layer's Gram block alone) vs epoch."""
    k = check_measure(measure, data.measures, f"run {data.name!r}")
    p = data.pair_sets.index("train-train")
    colors = depth_colors(data.layers)
    fig = new_figure(11.5, 4.8 if len(data.layers) <= 12 else 6.5)
    names = ("within", "between") if data.class_names else ("mean",)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    epoch = data.tags["epoch"]
    for ax, name in zip(axes, names):
        zero_line(ax)
        values = data.series[f"layer_{name}"][:, :, p, k]
        for li, layer in enumerate(data.layers):
            ax.plot(epoch, values[:, li], "-", marker="o", ms=3, color=colors[layer], lw=1.5, label=layer)
        epoch_axis(ax, epoch)
        ax.set_title(f"{name}-class, train–train" if name != "mean" else "all pairs (no classes), train–train")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{MEASURE_NAMES[measure]} of the layer's own weights")
    handles = axes[0].get_legend_handles_labels()[0]
    many = len(handles) > 20  # a deep model: the legend goes below, in columns, clear of the title
    fig.legend(
        handles=handles,
        loc="outside lower center" if many else "outside right upper",
        title="layer (input → output)",
        ncol=4 if many else 1,
        fontsize=8 if len(handles) > 12 else 9,
    )
    fig.suptitle(f"{data.name}: per-layer stiffness along training")
    return fig


def build_figures(data: RunData, at: Sequence[int], measure: str) -> Dict[str, object]:
    """The figures of :func:`plot_run` by file stem; figures without data (no spaces/layers) left out."""
    out = {
        "class_matrices": class_matrix_figure(data, at, measure),
        "stiffness_vs_training": training_figure(data, measure),
    }
    if data.spaces:
        out["stiffness_vs_distance"] = distance_figure(data, measure)
        out["critical_length"] = critical_length_figure(data, measure)
    if data.layers:
        out["layer_stiffness"] = layer_figure(data, measure)
    return out


def plot_run(
    run_or_path, out_dir, *, at: Optional[Sequence[int]] = None, measure: str = "sign", prefix: str = ""
) -> List[pathlib.Path]:
    """Write the figures of one run file as PNGs and return their paths.

    Files (each ``prefix + name + ".png"``): ``class_matrices`` (paper Figure 6), ``stiffness_vs_training``,
    ``stiffness_vs_distance`` (Figure 9) and ``critical_length`` (only when the run has distance spaces),
    ``layer_stiffness`` (only when it has layers).

    Args:
        run_or_path: Path of a run file, or a Run opened with :func:`keras_stiffness.store.reader.open_run`.
        out_dir: Output directory (created if missing).
        at: Measurement indices for the class matrices (negative counts from the end); default: first,
            middle and last.
        measure: ``"sign"`` or ``"cos"`` (must be recorded in the run).
        prefix: Prepended to every file name, e.g. ``"lr1e-3_"``.

    Returns:
        The written paths, in the order listed above.

    Raises:
        ValueError: Empty run, unknown measure, indices outside the run.
        TypeError: ``run_or_path`` neither a path nor a Run.

    Example:
        >>> paths = plot_run("run.h5", "figures", at=[0, -1], measure="cos")  # doctest: +SKIP
        >>> [p.name for p in paths][:2]  # doctest: +SKIP
        ['class_matrices.png', 'stiffness_vs_training.png']
    """
    with _opened(run_or_path) as run:
        n = len(run)
        check_measure(measure, tuple(run.measures), f"run file {str(run.path)!r}")
        rows = _resolve_at(at, n) if n else []
        data = load_run(run, sorted(set(rows) | {0, n - 1}) if n else [])
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with style():
        figures = build_figures(data, rows, measure)
        return [save(fig, out / f"{prefix}{stem}.png") for stem, fig in figures.items()]


def plot_sweep(run_paths: Sequence[str], out_path, *, measure: str = "sign", match: str = "both") -> pathlib.Path:
    """Figure 10: ξ and within-class stiffness vs learning rate (mean and min–max band across seeds), at the
    last common epoch and at a common train loss; see :mod:`keras_stiffness.plots.sweep`."""
    from keras_stiffness.plots.sweep import plot_sweep as _plot_sweep

    return _plot_sweep(run_paths, out_path, measure=measure, match=match)
