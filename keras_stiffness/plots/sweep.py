"""Figure 10 of the paper: critical length ξ and within-class stiffness vs learning rate, across runs.

One run file per learning rate, or several (one per seed) per learning rate. Runs are compared in two
ways, one row of the figure each (``match="both"``, the default), or in one of them:

- ``"epoch"``: each run at its measurement closest to the last epoch all runs reached;
- ``"loss"``: at a common train loss: the target is the largest of the runs' final train losses (so
  every run reached it; v1 of the paper compares at train loss 0.1), and each run is read at the first
  measurement at which its loss reaches the target (or the measurement just before, when that one is
  closer in log loss), so a late upward spike of the loss is never mistaken for the match. The loss is
  the probes' loss at each measurement (``probe_loss``), or fit's logged loss for runs without it, as
  in :func:`keras_stiffness.plots.common.current_train_loss`.

Seeds: runs are grouped by learning rate. When a learning rate has two or more runs (seeds, read from
``config["train"]["init_seed"]``, else ``["seed"]``), every curve is the mean across that learning
rate's seeds with a shaded min–max band; the legend gives the number of seeds. A value undefined in
some seeds (ξ with no zero crossing) is averaged over the seeds that define it and marked ``k/n``.
Single-seed sweeps are drawn as points joined by lines. Shared helpers come from
:mod:`keras_stiffness.plots.common`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import List, Optional, Sequence

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

MATCHES = ("both", "epoch", "loss")
#: The spread drawn across seeds (written on the figure).
BAND = "min–max"
BAND_ALPHA = 0.18


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
    seed: Optional[int] = None


@dataclasses.dataclass
class _RunSummary:
    path: str
    lr: float
    spaces: tuple
    pair_sets: tuple
    metric: str
    dist_top: float
    epoch: np.ndarray
    train_loss: np.ndarray  # current_train_loss: probe_loss, else fit's train_loss
    xi: np.ndarray  # (T, R)
    xi_fit: np.ndarray
    within: np.ndarray  # (T, P)
    between: np.ndarray
    seed: Optional[int] = None
    loss_source: str = "probe_loss"  # or "train_loss"


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


def _seed(run) -> Optional[int]:
    """The run's initialization seed: config["train"]["init_seed"], else ["seed"]; None when unknown."""
    train = (run.config or {}).get("train") or {}
    if not isinstance(train, dict):
        return None
    for key in ("init_seed", "seed"):
        value = train.get(key)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
    return None


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
        probe = np.asarray(tags.get("probe_loss", []), dtype=np.float64)
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
            seed=_seed(run),
            loss_source="probe_loss" if probe.size and np.isfinite(probe).any() else "train_loss",
        )


def _closest(values: np.ndarray, target: float) -> int:
    """Index of the finite value closest to ``target`` (the later one on ties)."""
    dist = np.where(np.isfinite(values), np.abs(values - target), np.inf)
    return int(len(dist) - 1 - np.argmin(dist[::-1]))


def first_reaching(loss: np.ndarray, target: float) -> int:
    """Index of the first measurement whose loss is at or below ``target``, or of the finite measurement
    just before it when that one is closer to ``target`` (in log loss when the losses are positive).

    Example:
        >>> first_reaching(np.array([np.nan, 2.0, 1.0, 0.5, 0.2, 0.6]), 0.6)  # 0.5, not the late 0.6
        3
        >>> first_reaching(np.array([2.0, 0.9, 0.1]), 1.0)  # 0.9 is closer than 2.0
        1
    """
    loss = np.asarray(loss, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(loss))
    reached = finite[loss[finite] <= target]
    if reached.size == 0:  # not reached (cannot happen for the target of match_points)
        return _closest(loss, target)
    i = int(reached[0])
    before = finite[finite < i]
    if before.size:
        j = int(before[-1])
        if target > 0 and loss[i] > 0:
            closer = abs(math.log(loss[j] / target)) < abs(math.log(loss[i] / target))
        else:
            closer = abs(loss[j] - target) < abs(loss[i] - target)
        if closer:
            return j
    return i


def _loss_name(runs: Sequence[_RunSummary]) -> str:
    sources = {run.loss_source for run in runs}
    if sources == {"probe_loss"}:
        return "train loss on the probes"
    if sources == {"train_loss"}:
        return "train loss (fit's logged loss)"
    return "train loss (on the probes where recorded, else fit's logged loss)"


def match_points(runs: Sequence[_RunSummary], match: str):
    """``(points sorted by learning rate then seed, target value, description of the rule)``.

    ``match`` is ``"epoch"`` or ``"loss"`` (see the module docstring). The description has two lines:
    the target, then how it was chosen and how each run is read.
    """
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
        what = (
            f"at the last common epoch, {fmt(target)}\n(the last epoch every run reached; "
            f"each run read at its measurement closest to it)"
        )
    elif match == "loss":
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
        picks = [first_reaching(run.train_loss, target) for run in runs]
        what = (
            f"at a common {_loss_name(runs)} ≈ {fmt(target)}\n(the largest final train loss, of "
            f"{run_label(runs[j].path)}, so every run reached it; each run read where it first reaches it)"
        )
    else:
        raise ValueError(f"Received: match={match!r}; expected 'epoch' or 'loss'.")
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
                seed=run.seed,
            )
        )
    points.sort(key=lambda pt: (pt.lr, -1 if pt.seed is None else pt.seed))
    return points, target, what


# ---------------------------------------------------------------------------------------------- seeds


@dataclasses.dataclass
class Band:
    """One quantity across the learning rates: mean over each learning rate's seeds and its spread."""

    mean: np.ndarray  # (G,) mean over the seeds where the value is defined (NaN: defined in none)
    lo: np.ndarray  # (G,) min over those seeds
    hi: np.ndarray  # (G,) max
    defined: np.ndarray  # (G,) seeds where the value is defined (finite)
    n: np.ndarray  # (G,) seeds (runs) of each learning rate


def group_by_lr(points: Sequence[SweepPoint]) -> List[List[SweepPoint]]:
    """The points grouped by learning rate, in increasing learning rate (seeds in the given order)."""
    groups: dict = {}
    for pt in points:
        groups.setdefault(pt.lr, []).append(pt)
    return [groups[lr] for lr in sorted(groups)]


def band(groups: Sequence[Sequence[SweepPoint]], value) -> Band:
    """:class:`Band` of ``value(point)`` over each group's points."""
    stats = []
    for group in groups:
        v = np.array([value(pt) for pt in group], dtype=np.float64)
        v = v[np.isfinite(v)]
        stats.append((v.mean(), v.min(), v.max(), v.size, len(group)) if v.size else (np.nan,) * 3 + (0, len(group)))
    mean, lo, hi, defined, n = (np.array(col) for col in zip(*stats))
    return Band(mean, lo, hi, defined.astype(int), n.astype(int))


def _seed_text(groups) -> str:
    """``"n = 3 seeds"``, or ``"n = 1–3 seeds"`` when the learning rates have different numbers of seeds."""
    n = sorted({len(g) for g in groups})
    return f"n = {n[0]} seeds" if len(n) == 1 else f"n = {n[0]}–{n[-1]} seeds"


def _draw_band(ax, lr, b: Band, color, alpha: float = BAND_ALPHA) -> None:
    """The shaded spread (a vertical bar where a value has no defined neighbour to shade towards), and
    ``k/n`` above means averaged over only some of the seeds."""
    ax.fill_between(lr, b.lo, b.hi, color=color, alpha=alpha, lw=0, zorder=1)
    ok = np.isfinite(b.mean)
    alone = ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False] & (b.lo < b.hi)
    if alone.any():
        ax.vlines(np.asarray(lr)[alone], b.lo[alone], b.hi[alone], color=color, alpha=min(1.0, 2.5 * alpha), lw=5)
    for x, y, k, n in zip(lr, b.mean, b.defined, b.n):
        if 0 < k < n and np.isfinite(y):
            ax.annotate(
                f"{k}/{n}", (x, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7, color=color
            )


def _band_handle(groups):
    from matplotlib.patches import Patch

    return Patch(facecolor="0.45", alpha=0.35, label=f"line: mean, band: {BAND}\nacross seeds ({_seed_text(groups)})")


# ---------------------------------------------------------------------------------------------- figure


def _sweep_row(subfig, points: List[SweepPoint], spaces: tuple, metric: str, top: float, measure: str) -> None:
    """One row: ξ per space vs learning rate; within (and between) stiffness vs learning rate."""
    from matplotlib.lines import Line2D

    ax_xi, ax_s = subfig.subplots(1, 2)
    groups = group_by_lr(points)
    seeds = any(len(g) > 1 for g in groups)
    lr = np.array([g[0].lr for g in groups])
    colors = depth_colors(spaces)
    beyond = 0
    xi_values = []
    for r, space in enumerate(spaces):
        for key, line in (
            ("xi", dict(ls="-", marker="o", ms=5, lw=1.8)),
            ("xi_fit", dict(ls="--", marker="s", mfc="none", ms=4, lw=1.1)),
        ):
            b = band(groups, lambda pt, key=key, r=r: getattr(pt, key)[r])
            label = space if key == "xi" else None
            beyond += plot_xi(ax_xi, lr, b.mean, top, color=colors[space], label=label, **line)
            xi_values.append(np.r_[b.mean, b.lo, b.hi] if seeds else b.mean)
            if seeds:
                _draw_band(ax_xi, lr, b, colors[space], BAND_ALPHA if key == "xi" else BAND_ALPHA / 2)
    if spaces:
        xi_limits(ax_xi, np.concatenate(xi_values), top)
        legend = ax_xi.legend(fontsize=8, title="space", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax_xi.add_artist(legend)
        kinds = [
            Line2D([], [], color="black", ls="-", marker="o", label="zero crossing"),
            Line2D([], [], color="black", ls="--", marker="s", mfc="none", label="linear fit"),
        ]
        if beyond:
            kinds.append(beyond_handle(top))
        if seeds:
            kinds.append(_band_handle(groups))
        ax_xi.legend(handles=kinds, fontsize=8, title="ξ estimator", loc="lower left", bbox_to_anchor=(1.01, 0.0))
    else:
        ax_xi.text(0.5, 0.5, "no distance spaces recorded", transform=ax_xi.transAxes, ha="center")
    ax_xi.set_ylabel(f"critical length ξ ({distance_label(metric)})")
    if seeds:
        ax_xi.set_title(
            "critical length vs learning rate, mean over seeds\n(gaps: ξ undefined in every seed; k/n: in k of n)"
        )
    else:
        ax_xi.set_title("critical length vs learning rate (gaps: ξ undefined)")
    sets = [p for p in ("train-train", "train-val", "val-val") if all(p in pt.within for pt in points)]
    zero_line(ax_s)
    for p in sets:
        for kind, line in (
            ("within", dict(ls="-", marker="o", ms=5, lw=1.8)),
            ("between", dict(ls="--", marker="s", mfc="none", ms=4, lw=1.1)),
        ):
            b = band(groups, lambda pt, kind=kind, p=p: getattr(pt, kind)[p])
            ax_s.plot(lr, b.mean, color=PAIR_SET_COLORS[p], label=f"{kind}, {pretty_pair_set(p)}", **line)
            if seeds:
                _draw_band(ax_s, lr, b, PAIR_SET_COLORS[p])
    ax_s.set_ylabel(f"class {MEASURE_NAMES[measure]}")
    ax_s.set_title(
        "within-class (solid) and between-class (dashed) stiffness" + (",\nmean over seeds" if seeds else "")
    )
    handles = ax_s.get_legend_handles_labels()[0] + ([_band_handle(groups)] if seeds else [])
    ax_s.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in (ax_xi, ax_s):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3, which="both")
        ax.set_xticks(lr, [f"{v:g}" for v in lr], minor=False)


def _row_title(points: List[SweepPoint], what: str, match: str) -> str:
    used = np.array([pt.epoch if match == "epoch" else pt.train_loss for pt in points])
    first, _, rest = what.partition("\n")
    spread = ""
    if np.isfinite(used).all() and used.min() != used.max():
        spread = f"; matched {'epochs' if match == 'epoch' else 'losses'} {fmt(used.min())}–{fmt(used.max())}"
    return f"Matched {first}\n{rest.rstrip(')')}{spread})" if rest else f"Matched {first}{spread}"


def sweep_figure(rows, spaces: tuple, metric: str, top: float, measure: str, note: str = ""):
    """The sweep Figure: one row of two panels per ``(match, points, what)`` in ``rows``, each row titled
    with its matching rule."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.0, 0.6 + 5.4 * len(rows)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1, hspace=0.04))
    for subfig, (match, points, what) in zip(subfigs, rows):
        _sweep_row(subfig, points, spaces, metric, top, measure)
        subfig.suptitle(_row_title(points, what, match), fontsize=10.5)
    points = rows[0][1]
    groups = group_by_lr(points)
    n = sorted({len(g) for g in groups})
    if n == [1]:
        runs = f"{len(points)} runs"
    elif len(n) == 1:
        runs = f"{len(points)} runs: {len(groups)} learning rates × {n[0]} seeds"
    else:
        runs = f"{len(points)} runs: {len(groups)} learning rates, {n[0]}–{n[-1]} seeds each"
    fig.suptitle(f"Learning-rate sweep ({runs}), {MEASURE_NAMES[measure]}" + (f"\n{note}" if note else ""))
    return fig


def build_sweep(run_paths: Sequence[str], *, measure: str = "sign", match: str = "both"):
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
    if len({run.lr for run in runs}) < 2:
        raise ValueError(
            f"Received: {len(runs)} run files all at learning rate {runs[0].lr:g}; expected at least 2 "
            f"learning rates (runs of one learning rate are seeds of one point)."
        )
    rows, skipped = [], []
    for m in ("epoch", "loss") if match == "both" else (match,):
        try:
            rows.append((m, *match_points(runs, m)[::2]))
        except ValueError:
            if match != "both":
                raise
            skipped.append(m)
    if not rows:
        match_points(runs, skipped[0])  # raises the first row's error
    note = {
        "epoch": "no row at a common epoch: a run has no epoch recorded",
        "loss": "no row at a common train loss: a run has no train loss recorded",
    }
    top = max(run.dist_top for run in runs)
    return sweep_figure(rows, runs[0].spaces, runs[0].metric, top, measure, "; ".join(note[m] for m in skipped))


def _show(value):
    return list(value) if isinstance(value, tuple) else repr(value)


def plot_sweep(run_paths: Sequence[str], out_path, *, measure: str = "sign", match: str = "both") -> pathlib.Path:
    """Write the learning-rate sweep figure (paper Figure 10) as a PNG.

    Args:
        run_paths: Two or more run files, at two or more learning rates (read from
            ``config["train"]["lr"]``, else from the ``learning_rate`` tag), with the same distance
            spaces. Several runs at one learning rate are seeds: drawn as their mean with a min–max band.
        out_path: PNG path (parent directories created).
        measure: ``"sign"`` or ``"cos"``.
        match: ``"both"``: two rows, the runs at the last common epoch (top) and at a common train
            loss (bottom); ``"epoch"`` or ``"loss"``: that row alone (see the module docstring).

    Returns:
        ``out_path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: Fewer than 2 runs or learning rates, different spaces, no learning rate, unknown
            measure or match.

    Example:
        >>> plot_sweep(["lr1e-4.h5", "lr1e-3.h5"], "sweep.png", match="loss")  # doctest: +SKIP
        PosixPath('sweep.png')
    """
    out = pathlib.Path(out_path)
    with style():
        fig = build_sweep(run_paths, measure=measure, match=match)
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(fig, out)
