"""Figure 10 of the paper: critical length ξ and within-class stiffness vs learning rate, across runs.

One run file per learning rate. The runs are compared either at the last epoch they all reached
(``match="epoch"``) or at a common train loss (``match="loss"``: the largest of the runs' final train
losses, the lowest loss every run reached; v1 of the paper compares at train loss 0.1). Shared helpers
come from :mod:`keras_stiffness.plots.common`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import List, Sequence

import numpy as np

from keras_stiffness.plots.common import (
    MEASURE_NAMES,
    PAIR_SET_COLORS,
    beyond_handle,
    check_measure,
    current_train_loss,
    depth_colors,
    distance_label,
    distance_top,
    fmt,
    plot_xi,
    pretty_pair_set,
    run_label,
    save,
    style,
    xi_limits,
    zero_line,
)

MATCHES = ("epoch", "loss")


@dataclasses.dataclass
class SweepPoint:
    """One run of the sweep, read at its matched measurement."""

    path: str
    lr: float
    index: int
    epoch: float
    train_loss: float
    xi: np.ndarray  # (R,) zero crossing
    xi_fit: np.ndarray  # (R,) linear fit
    within: dict  # pair set -> float
    between: dict


@dataclasses.dataclass
class _RunSummary:
    path: str
    lr: float
    spaces: tuple
    pair_sets: tuple
    metric: str
    dist_top: float
    epoch: np.ndarray
    train_loss: np.ndarray
    xi: np.ndarray  # (T, R)
    xi_fit: np.ndarray
    within: np.ndarray  # (T, P)
    between: np.ndarray


def _learning_rate(run) -> float:
    """The run's nominal learning rate: config["train"]["lr"], else the first recorded tag value."""
    train = (run.config or {}).get("train") or {}
    lr = train.get("lr") if isinstance(train, dict) else None
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0:
        return float(lr)
    tags = np.asarray(run.tags.get("learning_rate", []), dtype=np.float64)
    tags = tags[np.isfinite(tags) & (tags > 0)]
    if tags.size == 0:
        raise ValueError(
            f"Received: run file {str(run.path)!r} with no learning rate recorded (neither "
            f"config['train']['lr'] nor a finite learning_rate tag); expected one per run. "
            f"Fix: use an optimizer that exposes its learning rate (the StiffnessCallback "
            f"tags it) or pass run_config={{'train': {{'lr': ...}}}}."
        )
    return float(tags[0])


def _read(path: str, measure: str) -> _RunSummary:
    from keras_stiffness.store.reader import open_run

    with open_run(path) as run:
        k = check_measure(measure, tuple(run.measures), f"run file {str(path)!r}")
        if len(run) == 0:
            raise ValueError(f"Received: run file {str(path)!r} with no measurements; expected at least one.")
        tags = run.tags
        spaces = tuple(run.spaces)
        r_ = len(spaces)
        xi = np.asarray(run.series("critical_length"), dtype=np.float64)[:, :, k] if r_ else None
        fit = np.asarray(run.series("critical_length_fit"), dtype=np.float64)[:, :, k] if r_ else None
        return _RunSummary(
            path=str(path),
            lr=_learning_rate(run),
            spaces=spaces,
            pair_sets=tuple(run.pair_sets),
            metric=str(run.info.metric),
            dist_top=distance_top(run, str(run.info.metric)),
            epoch=np.asarray(tags["epoch"], dtype=np.float64),
            train_loss=current_train_loss(tags),
            xi=xi,
            xi_fit=fit,
            within=np.asarray(run.series("within"), dtype=np.float64)[:, :, k],
            between=np.asarray(run.series("between"), dtype=np.float64)[:, :, k],
        )


def _closest(values: np.ndarray, target: float) -> int:
    """Index of the finite value closest to ``target`` (the later one on ties)."""
    dist = np.where(np.isfinite(values), np.abs(values - target), np.inf)
    return int(len(dist) - 1 - np.argmin(dist[::-1]))


def match_points(runs: Sequence[_RunSummary], match: str):
    """``(points sorted by learning rate, target value, description of the target)``."""
    if match == "epoch":
        last = []
        for run in runs:
            finite = run.epoch[np.isfinite(run.epoch)]
            if finite.size == 0:
                raise ValueError(
                    f"Received: run file {run.path!r} with no epoch recorded; expected epochs "
                    f"to match runs at a common epoch. Fix: use match='loss'."
                )
            last.append(float(finite.max()))
        target = min(last)
        picks = [_closest(run.epoch, target) for run in runs]
        what = f"at the last common epoch, {fmt(target)}"
    else:
        finals = []
        for run in runs:
            finite = np.flatnonzero(np.isfinite(run.train_loss))
            if finite.size == 0:
                raise ValueError(
                    f"Received: run file {run.path!r} with no train loss recorded; expected "
                    f"train losses to match runs at a common loss. Fix: use match='epoch'."
                )
            finals.append(float(run.train_loss[finite[-1]]))
        j = int(np.argmax(finals))
        target = finals[j]
        picks = [_closest(run.train_loss, target) for run in runs]
        what = f"at train loss ≈ {fmt(target)} (the largest final train loss, of {run_label(runs[j].path)})"
    points = []
    for run, i in zip(runs, picks):
        r_ = len(run.spaces)
        points.append(
            SweepPoint(
                path=run.path,
                lr=run.lr,
                index=i,
                epoch=float(run.epoch[i]),
                train_loss=float(run.train_loss[i]),
                xi=run.xi[i] if r_ else np.zeros(0),
                xi_fit=run.xi_fit[i] if r_ else np.zeros(0),
                within={p: float(run.within[i, j]) for j, p in enumerate(run.pair_sets)},
                between={p: float(run.between[i, j]) for j, p in enumerate(run.pair_sets)},
            )
        )
    points.sort(key=lambda pt: pt.lr)
    return points, target, what


def sweep_figure(points: List[SweepPoint], spaces: tuple, metric: str, top: float, measure: str, what: str, match: str):
    """Two panels: ξ per space vs learning rate; within (and between) stiffness vs learning rate."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(13.0, 5.4), layout="constrained")
    ax_xi, ax_s = fig.subplots(1, 2)
    lr = np.array([pt.lr for pt in points])
    colors = depth_colors(spaces)
    beyond = 0
    for r, space in enumerate(spaces):
        beyond += plot_xi(
            ax_xi,
            lr,
            [pt.xi[r] for pt in points],
            top,
            ls="-",
            marker="o",
            ms=5,
            color=colors[space],
            lw=1.8,
            label=space,
        )
        beyond += plot_xi(
            ax_xi,
            lr,
            [pt.xi_fit[r] for pt in points],
            top,
            ls="--",
            marker="s",
            mfc="none",
            ms=4,
            color=colors[space],
            lw=1.1,
        )
    if spaces:
        xi_limits(ax_xi, np.concatenate([np.r_[pt.xi, pt.xi_fit] for pt in points]), top)
        legend = ax_xi.legend(fontsize=8, title="space", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax_xi.add_artist(legend)
        kinds = [
            Line2D([], [], color="black", ls="-", marker="o", label="zero crossing"),
            Line2D([], [], color="black", ls="--", marker="s", mfc="none", label="linear fit"),
        ]
        if beyond:
            kinds.append(beyond_handle(top))
        ax_xi.legend(handles=kinds, fontsize=8, title="ξ estimator", loc="lower left", bbox_to_anchor=(1.01, 0.0))
    else:
        ax_xi.text(0.5, 0.5, "no distance spaces recorded", transform=ax_xi.transAxes, ha="center")
    ax_xi.set_ylabel(f"critical length ξ ({distance_label(metric)})")
    ax_xi.set_title("critical length vs learning rate (gaps: ξ undefined)")
    sets = [p for p in ("train-train", "train-val", "val-val") if all(p in pt.within for pt in points)]
    zero_line(ax_s)
    for p in sets:
        ax_s.plot(
            lr,
            [pt.within[p] for pt in points],
            "-",
            marker="o",
            ms=5,
            color=PAIR_SET_COLORS[p],
            lw=1.8,
            label=f"within, {pretty_pair_set(p)}",
        )
        ax_s.plot(
            lr,
            [pt.between[p] for pt in points],
            "--",
            marker="s",
            mfc="none",
            ms=4,
            color=PAIR_SET_COLORS[p],
            lw=1.1,
            label=f"between, {pretty_pair_set(p)}",
        )
    ax_s.set_ylabel(f"class {MEASURE_NAMES[measure]}")
    ax_s.set_title("within-class (solid) and between-class (dashed) stiffness")
    ax_s.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in (ax_xi, ax_s):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3, which="both")
        ax.set_xticks(lr, [f"{v:g}" for v in lr], minor=False)
    used = np.array([pt.epoch if match == "epoch" else pt.train_loss for pt in points])
    spread = ""
    if np.isfinite(used).all() and used.min() != used.max():
        spread = (
            f"; matched {'epochs' if match == 'epoch' else 'train losses'} range {fmt(used.min())}–{fmt(used.max())}"
        )
    fig.suptitle(f"Learning-rate sweep ({len(points)} runs), {MEASURE_NAMES[measure]}\n{what}{spread}")
    return fig


def build_sweep(run_paths: Sequence[str], *, measure: str = "sign", match: str = "epoch"):
    """Read, check and match the runs; return the Figure (tests inspect it)."""
    paths = [run_paths] if isinstance(run_paths, (str, bytes, os.PathLike)) else list(run_paths)
    if len(paths) < 2:
        raise ValueError(
            f"Received: {len(paths)} run file(s) {[str(p) for p in paths]}; expected at least 2 "
            f"(one per learning rate)."
        )
    if match not in MATCHES:
        raise ValueError(f"Received: match={match!r}; expected one of {MATCHES}.")

    runs = [_read(os.fspath(p), measure) for p in paths]
    for run in runs[1:]:
        for name in ("spaces", "metric"):
            if getattr(run, name) != getattr(runs[0], name):
                raise ValueError(
                    f"Received: runs with different distance {name}: {runs[0].path!r} has "
                    f"{_show(getattr(runs[0], name))}, {run.path!r} has {_show(getattr(run, name))}; expected "
                    f"the same {name} in every run (same architecture and measurement settings)."
                )
    points, _, what = match_points(runs, match)
    top = max(run.dist_top for run in runs)
    return sweep_figure(points, runs[0].spaces, runs[0].metric, top, measure, what, match)


def _show(value):
    return list(value) if isinstance(value, tuple) else repr(value)


def plot_sweep(run_paths: Sequence[str], out_path, *, measure: str = "sign", match: str = "epoch") -> pathlib.Path:
    """Write the learning-rate sweep figure (paper Figure 10) as a PNG.

    Args:
        run_paths: Two or more run files, one per learning rate (read from ``config["train"]["lr"]``,
            else from the ``learning_rate`` tag), with the same distance spaces.
        out_path: PNG path (parent directories created).
        measure: ``"sign"`` or ``"cos"``.
        match: ``"epoch"``: each run at its measurement closest to the last epoch all runs reached;
            ``"loss"``: closest to the largest of the runs' final train losses.

    Returns:
        ``out_path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: Fewer than 2 runs, different spaces, no learning rate, unknown measure or match.

    Example:
        >>> plot_sweep(["lr1e-4.h5", "lr1e-3.h5"], "sweep.png", match="loss")  # doctest: +SKIP
        PosixPath('sweep.png')
    """
    out = pathlib.Path(out_path)
    with style():
        fig = build_sweep(run_paths, measure=measure, match=match)
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(fig, out)
