"""Shared pieces of the figures: styling, colours, number formatting, axis helpers, run loading.

Used by :mod:`keras_stiffness.plots.run_figures` (the figures of one run) and :mod:`keras_stiffness.plots.sweep`
(the learning-rate sweep). matplotlib is imported inside the functions. Figures are built as
:class:`matplotlib.figure.Figure` objects drawn by the Agg canvas (never pyplot), so nothing is shown,
no global figure is left open and the caller's backend is never switched.

Reading conventions shared by every figure:

- Epoch axes: the first measurement is usually at epoch 0 (initialization) and later ones are spaced
  logarithmically, so when positive epochs span a decade or more the axis is *symlog*: linear from 0 to
  the first power of ten at or below the smallest positive epoch, logarithmic above. The axis label says
  so.
- Train-loss axes show the training probes' loss at each measurement (``probe_loss``; fit's logged
  loss for runs without it), inverted (time runs left to right) and logarithmic when the losses span a
  decade; points are not joined, since the loss is not monotone in time. Measurements without a loss
  are left out of those panels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
from typing import Dict, Iterator, List, Sequence

import numpy as np

from keras_stiffness.math.record import TAGS, Measurement

DPI = 120
_RC = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "figure.titlesize": 12,
}
PAIR_SET_COLORS = {"train-train": "tab:blue", "train-val": "tab:red", "val-val": "tab:green"}
MEASURE_NAMES = {"sign": "sign stiffness", "cos": "cosine stiffness"}


@dataclasses.dataclass
class RunData:
    """What the figures read from a run file, loaded once (the file may be closed afterwards).

    ``series`` holds within/between, layer_within/layer_between (when there are layers) and
    critical_length/critical_length_fit (when there are spaces), and mean/layer_mean (when there are
    no classes) stacked over measurements, ``rows`` the
    full :class:`Measurement` of the few measurements drawn in detail.
    """

    name: str
    class_names: List[str]
    pair_sets: tuple
    measures: tuple
    layers: tuple
    spaces: tuple
    metric: str
    min_count: int
    tags: Dict[str, np.ndarray]
    series: Dict[str, np.ndarray]
    rows: Dict[int, Measurement]
    dist_top: float = 2.0

    @property
    def n(self) -> int:
        return int(self.tags["step"].shape[0])


# ---------------------------------------------------------------------------------------------- loading


def load_run(run, rows: Sequence[int] = ()) -> RunData:
    """Read the time series of an open run, plus the full measurements ``rows`` (indices, 0-based)."""
    info = run.info
    n = len(run)
    if n == 0:
        raise ValueError(
            f"Received: run file {str(run.path)!r} with no measurements; expected at least one. "
            f"Fix: plot it after the first measurement has been appended."
        )
    tags = {k: np.asarray(v, dtype=np.float64) for k, v in dict(run.tags).items()}
    for key in TAGS:
        tags.setdefault(key, np.full(n, np.nan))
    wanted = {
        "within": True,
        "between": True,
        "layer_within": bool(run.layers),
        "layer_between": bool(run.layers),
        "critical_length": bool(run.spaces),
        "critical_length_fit": bool(run.spaces),
        "mean": not info.class_names,  # no classes: the mean over all pairs stands in for within/between
        "layer_mean": bool(run.layers) and not info.class_names,
    }
    series = {name: np.asarray(run.series(name), dtype=np.float64) for name, ok in wanted.items() if ok}
    return RunData(
        name=run_label(run.path),
        class_names=[str(c) for c in info.class_names],
        pair_sets=tuple(run.pair_sets),
        measures=tuple(run.measures),
        layers=tuple(run.layers),
        spaces=tuple(run.spaces),
        metric=str(info.metric),
        min_count=int(info.min_count),
        tags=tags,
        series=series,
        rows={int(i): run.measurement(int(i), gram=False) for i in sorted(set(rows))},
        dist_top=distance_top(run, str(info.metric)),
    )


def distance_top(run, metric: str) -> float:
    """The largest distance a curve covers: 2 for ``1 − cos``, else the largest last bin edge."""
    if metric == "cosine" or not run.spaces:
        return 2.0
    top = np.asarray(run.series("distance_edges"), dtype=np.float64)[..., -1]
    return float(np.nanmax(top)) if np.isfinite(top).any() else math.inf


def run_label(path) -> str:
    """A short name of a run file for titles: its stem, or its folder's name for ``.../<name>/run.h5``."""
    path = pathlib.Path(str(path))
    return path.parent.name if path.stem == "run" and path.parent.name else path.stem


def check_measure(measure: str, measures: Sequence[str], where: str) -> int:
    if measure not in measures:
        raise ValueError(
            f"Received: measure={measure!r}; expected one of {list(measures)} (the measures recorded in {where})."
        )
    return list(measures).index(measure)


# ---------------------------------------------------------------------------------------------- helpers


def is_finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def fmt(x: float, spec: str = ".3g") -> str:
    return format(float(x), spec) if is_finite(x) else "n/a"


def pretty_pair_set(pair_set: str) -> str:
    return pair_set.replace("-", "–")


def when_parts(tags: Dict[str, np.ndarray], i: int) -> List[str]:
    step = int(tags["step"][i])
    parts = ["step 0 (init)" if step == 0 else f"step {step}"]
    if is_finite(tags["epoch"][i]):
        parts.append(f"epoch {fmt(tags['epoch'][i])}")
    parts.append(f"train loss {fmt(tags['train_loss'][i])}")
    return parts


def when(tags: Dict[str, np.ndarray], i: int) -> str:
    """``"step 120, epoch 3, train loss 0.412"`` for measurement ``i`` (``"step 0 (init)"`` first)."""
    return ", ".join(when_parts(tags, i))


def distance_label(metric: str) -> str:
    return "distance 1 − cos(R1, R2)" if metric == "cosine" else "euclidean distance ‖R1 − R2‖"


def depth_colors(names: Sequence[str]) -> Dict[str, object]:
    """Grey for ``"input"``, then viridis from dark (shallow) to yellow (deep) in the given order."""
    import matplotlib

    layers = [s for s in names if s != "input"]
    cmap = matplotlib.colormaps["viridis"]
    out = {"input": "0.35"}
    for j, s in enumerate(layers):
        out[s] = cmap(0.9 * j / max(1, len(layers) - 1))
    return out


def plain_ticks(axis) -> None:
    """Tick labels as plain numbers (0.01, 0.1, 1, 10) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def epoch_axis(ax, epochs) -> None:
    """Linear epoch axis, or symlog (0 = initialization kept) when positive epochs span a decade."""
    e = np.asarray(epochs, dtype=np.float64)
    pos = e[np.isfinite(e) & (e > 0)]
    if pos.size and pos.max() / pos.min() >= 10:
        lin = 10.0 ** math.floor(math.log10(pos.min()))
        ax.set_xscale("symlog", linthresh=lin, linscale=0.4)
        plain_ticks(ax.xaxis)
        ax.set_xlabel(f"epoch (0 = init; linear up to {lin:g}, log above)")
    else:
        ax.set_xlabel("epoch")
    ax.relim()
    ax.autoscale(axis="x")


def loss_axis(ax, losses) -> None:
    """Inverted train-loss axis (training runs left to right), log when the losses span a decade."""
    from matplotlib.ticker import LogLocator

    v = np.asarray(losses, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    log = bool(v.size) and v.max() / v.min() >= 10
    if log:
        ax.set_xscale("log")
        if v.max() / v.min() < 1e3:  # few decades: 1-2-5 ticks in plain numbers
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            plain_ticks(ax.xaxis)
        # more decades: matplotlib's powers of ten, which never crowd
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("train loss on the probes" + (" (log)" if log else "") + ", decreasing →")


def zero_line(ax) -> None:
    ax.axhline(0.0, color="0.5", lw=0.8, zorder=0)


def empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.35", wrap=True)


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


@contextlib.contextmanager
def style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_RC):
        yield


def save(fig, path: pathlib.Path) -> pathlib.Path:
    """Write ``fig`` as PNG through the Agg canvas and drop its artists."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()
    return path


def current_train_loss(tags) -> np.ndarray:
    """The train loss to plot against: the probes' loss at each measurement (consistent across rows,
    unlike fit's running epoch mean), or fit's logged loss for runs that lack it."""
    probe = np.asarray(tags.get("probe_loss", []), dtype=np.float64)
    if probe.size and np.isfinite(probe).any():
        return probe
    return np.asarray(tags["train_loss"], dtype=np.float64)


# ---------------------------------------------------------------------------------------------- ξ


def plot_xi(ax, x, y, top: float, **style) -> int:
    """Plot ξ values; those beyond the distance range (> ``top``) as ▲ on the top edge. Returns their count."""
    y = np.asarray(y, dtype=np.float64)
    beyond = np.isfinite(y) & (y > top)
    ax.plot(x, np.where(beyond, np.nan, y), **style)
    if beyond.any():
        ax.plot(
            np.asarray(x)[beyond],
            np.ones(int(beyond.sum())),
            ls="none",
            marker="^",
            ms=7,
            color=style.get("color"),
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )
    return int(beyond.sum())


def xi_limits(ax, values, top: float) -> None:
    """y from 0 to just above the largest ξ within the distance range."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v <= top)]
    hi = float(v.max()) if v.size else (top if math.isfinite(top) else 1.0)
    ax.set_ylim(0.0, 1.08 * hi if hi > 0 else 1.0)


def beyond_handle(top: float):
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="none", marker="^", ms=7, color="black", label=f"beyond the distance\nrange (> {top:.3g})")
