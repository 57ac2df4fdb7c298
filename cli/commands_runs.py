"""``kstiff plot`` and ``kstiff inspect``: figures of run files, and what a run file holds."""

from __future__ import annotations

import os
import pathlib
from typing import Dict, List, Sequence

import click

from keras_stiffness.cli.options import echo_json, format_option

PLOT_HELP = """Write the PNG figures of one or more run files; print the written paths.

For each RUN file: class matrices, stiffness along training, stiffness vs distance, critical length
xi, per-layer stiffness. The figures go next to each run file, or into --out DIR (file names then
prefixed by the run's name when several runs share the folder). With runs at two or more learning
rates, also a figure of xi against the learning rate (the runs of one sweep), written to --sweep-out,
default lr-sweep.png in --out or in the runs' common parent folder. Runs at the same learning rate
are seeds: drawn as their mean with a min-max band. --match both (default) draws two rows, the
runs at the last common epoch and at a common train loss; epoch or loss draws that row alone.
"""

INSPECT_HELP = """Show what a run file holds: configuration, probes, and one line per measurement with
its tags (step, epoch, losses, learning rate) and stiffness summaries.

Works on a file a training run is still writing (it shows the measurements written so far).
--format json gives {"run": {...}, "measurements": [...]}, each measurement with "pair_sets" and
"layers" in the shape of kstiff analyze's JSON.
"""


def _label(path: pathlib.Path) -> str:
    """A run's name: the file stem, or its folder's name for files called run.h5."""
    return path.parent.resolve().name if path.stem == "run" else path.stem


def plan_plots(paths: Sequence[str], out: str | None) -> List[tuple]:
    """``(run path, out dir, prefix)`` per run; prefixes only where runs share an out dir."""
    plans = []
    for p in paths:
        path = pathlib.Path(p)
        plans.append([path, pathlib.Path(out) if out else path.parent, ""])
    by_dir: Dict[str, list] = {}
    for plan in plans:
        by_dir.setdefault(str(plan[1].resolve()), []).append(plan)
    for group in by_dir.values():
        if len(group) < 2:
            continue
        seen: Dict[str, int] = {}
        for plan in group:
            label = _label(plan[0])
            seen[label] = seen.get(label, 0) + 1
            plan[2] = f"{label}-" if seen[label] == 1 else f"{label}-{seen[label]}-"
    return [tuple(plan) for plan in plans]


@click.command("plot", help=PLOT_HELP, short_help="PNG figures of run files.")
@click.argument(
    "runs", nargs=-1, required=True, metavar="RUN.h5 [RUN2.h5 ...]", type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Folder for all figures (created if missing). Default: next to each run file.",
)
@click.option(
    "--measure", type=click.Choice(["sign", "cos"]), default="sign", show_default=True, help="Stiffness measure drawn."
)
@click.option(
    "--at",
    "at",
    default=None,
    metavar="I[,I...]",
    help="Measurement indices for the class matrices (negative from the end). Default: first, middle, last.",
)
@click.option(
    "--match",
    type=click.Choice(["both", "epoch", "loss"]),
    default="both",
    show_default=True,
    help="Sweep figure: compare runs at the last common epoch, at a common train loss, or both (two rows).",
)
@click.option(
    "--sweep-out",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PNG",
    help="Path of the sweep figure (with two or more runs).",
)
def plot_command(runs, out, measure, at, match, sweep_out):
    from keras_stiffness.plots.run_figures import plot_run, plot_sweep
    from keras_stiffness.store.reader import open_run

    indices = None
    if at is not None:
        try:
            indices = [int(v) for v in at.split(",") if v.strip()]
        except ValueError as exc:
            raise click.BadParameter(f"{at!r}; expected integers such as 0,-1.", param_hint="'--at'") from exc
    for path in runs:  # fail on a bad file before drawing anything
        with open_run(path):
            pass
    for path, out_dir, prefix in plan_plots(runs, out):
        for written in plot_run(str(path), out_dir, at=indices, measure=measure, prefix=prefix):
            click.echo(str(written))
    if len(runs) > 1:
        asked = sweep_out is not None
        if not asked:
            parent = out or os.path.commonpath([str(pathlib.Path(p).resolve().parent) for p in runs])
            sweep_out = pathlib.Path(parent) / "lr-sweep.png"
        try:
            click.echo(str(plot_sweep(list(runs), sweep_out, measure=measure, match=match)))
        except ValueError as exc:
            if asked:  # the user asked for the sweep figure: not drawing it is an error
                raise
            # Several unrelated runs (not one learning-rate sweep): their own figures are the result.
            click.echo(f"Note: no learning-rate sweep figure: {exc}", err=True)


def run_to_dict(run, path: str) -> dict:
    """What ``kstiff inspect`` reports about the run as a whole (JSON-ready)."""
    from keras_stiffness.app.report import clean
    from keras_stiffness.store.layout import FORMAT

    info = run.info
    config = dict(run.config or {})
    attrs = run.attrs
    out = {
        "path": path,
        "format": attrs.get("format", FORMAT),
        "format_version": run.format_version,
        "created": attrs.get("created"),
        "library_version": attrs.get("library_version"),
        "n_measurements": len(run),
        "class_names": list(run.class_names),
        "pair_sets": list(run.pair_sets),
        "measures": list(run.measures),
        "layers": list(run.layers),
        "spaces": list(run.spaces),
    }
    for key in ("metric", "bins", "min_count", "save_gram", "loss", "probe_hash", "rules", "versions"):
        out[key] = getattr(info, key, None)
    for key in ("model", "probes", "train", "schedule", "measure"):
        out[key] = config.get(key)
    out["config"] = config
    out["model_summary"] = getattr(info, "model_summary", None)
    if not out["class_names"]:
        from keras_stiffness.app.report import NO_CLASSES

        out["classes"] = NO_CLASSES
    return clean(out)


@click.command("inspect", help=INSPECT_HELP, short_help="What a run file holds.")
@click.argument("run_path", metavar="RUN.h5", type=click.Path(exists=True, dir_okay=False))
@format_option
def inspect_command(run_path, fmt):
    from keras_stiffness.app.report import inspect_text, measurement_to_dict
    from keras_stiffness.store.reader import open_run

    with open_run(run_path) as run:
        run_dict = run_to_dict(run, run_path)
        names = list(run.class_names)
        measurements = [measurement_to_dict(run.measurement(i, gram=False), names) for i in range(len(run))]
        if run.info.save_gram:  # read every tile once, a strip of rows at a time: damage is reported
            n = len(run.info.probe_labels)
            strip = max(1, 2**22 // max(n, 1))
            for i in range(len(run)):
                for lo in range(0, n, strip):
                    run.gram(i, rows=slice(lo, lo + strip))
    if fmt == "json":
        echo_json({"run": run_dict, "measurements": measurements})
    else:
        click.echo(inspect_text(run_dict, measurements))
