"""``kstiff train``: train the paper's network while measuring stiffness (what ``make demo`` runs)."""

from __future__ import annotations

import click

from keras_stiffness.cli.errors import as_usage_error
from keras_stiffness.cli.options import (
    data_options,
    echo_json,
    format_option,
    parse_float_list,
    parse_seed_list,
    progress_printer,
)

# Keep in step with keras_stiffness.app.train.DEFAULT_EPOCHS (a test checks it); not imported here so
# that `kstiff --help` stays instant.
DEFAULT_EPOCHS = 40

TRAIN_HELP = f"""Train the paper's network while measuring stiffness, then write the run file,
its figures and a summary.

With no options: the fully connected net (Dense 500-300-100, ReLU, softmax) on the bundled
digits, Adam at learning rate 1e-3, batch 32, {DEFAULT_EPOCHS} epochs (from initialization to
clear overfitting: the train loss reaches ~1e-4 while the validation loss rises). Stiffness is
measured on 50 probes per class (and held-out probes) at initialization, at log-spaced optimizer
steps (dense early) and at every epoch end.

Several learning rates (--lr 1e-4 --lr 1e-3, or --lr 1e-4,3e-4,1e-3) run a sweep: one run each on
the same data, probes and initialization, plus a figure of the critical length xi against the
learning rate.

Several seeds (--seeds 0,1,2, or repeated) run each learning rate once per seed. A seed sets the
model's initialization and the training order (shuffling); the data split and the probes stay
those of --seed, so every run is measured on the same probes. The sweep figure then draws, per
learning rate, the mean across seeds with a min-max band.

\b
Output layout (under --out, default runs/):
  <arch>-<data>-lr<lr>/          one folder per run, e.g. runs/mlp-digits-lr0.001/
                                 (with several --seeds: runs/mlp-digits-lr0.001-seed1/)
    run.h5                       HDF5 run file: kstiff inspect / kstiff plot / open_run()
    summary.json                 the summary printed at the end
    class_matrices.png           class stiffness matrices (first, middle, last measurement)
    stiffness_vs_training.png    within/between stiffness vs epoch and train loss
    stiffness_vs_distance.png    stiffness vs distance, input and each layer
    critical_length.png          xi per layer along training
    layer_stiffness.png          stiffness of each layer's own weights
  <arch>-<data>-lr-sweep.png     with several --lr: xi vs learning rate, runs matched at the
                                 last common epoch (top) and at a common train loss (bottom)

Progress goes to stderr (one line per epoch); the summary (or --format json) to stdout.
"""


@click.command("train", help=TRAIN_HELP, short_help="Train the paper's net while measuring stiffness.")
@data_options
@click.option(
    "--arch",
    type=click.Choice(["mlp", "cnn", "resnet20"]),
    default="mlp",
    show_default=True,
    help="mlp: Dense 500-300-100 ReLU; cnn: Conv 3x3 16-32-32 with 2x2 max pooling; resnet20: ResNet20 v1 "
    "without batch normalization (16/32/64 filters).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULT_EPOCHS, show_default=True)
@click.option(
    "--lr",
    "lrs",
    multiple=True,
    default=("1e-3",),
    show_default=True,
    metavar="LR[,LR...]",
    callback=parse_float_list,
    help="Adam learning rate; repeat or comma-separate for a sweep.",
)
@click.option(
    "--seeds",
    "seeds",
    multiple=True,
    metavar="S[,S...]",
    callback=parse_seed_list,
    help="Seeds of the initialization and the training order, one run per (learning rate, seed); "
    "data split and probes stay those of --seed. Default: --seed.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--every-n-epochs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Measure at every n-th epoch end (besides the log-spaced steps).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs",
    show_default=True,
    metavar="DIR",
    help="Parent folder of the run folders.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing run files.")
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@format_option
def train_command(
    data,
    data_dir,
    per_class,
    val_per_class,
    seed,
    arch,
    epochs,
    lrs,
    seeds,
    batch_size,
    every_n_epochs,
    out,
    overwrite,
    no_figures,
    quiet,
    fmt,
):
    from keras_stiffness.app.report import train_summary_text
    from keras_stiffness.app.train import TrainConfig, check_outputs, plan_sweep, train_sweep

    config = TrainConfig(
        data=data,
        data_dir=data_dir,
        arch=arch,
        epochs=epochs,
        learning_rate=lrs[0],
        batch_size=batch_size,
        per_class=per_class,
        val_per_class=val_per_class,
        seed=seed,
        every_n_epochs=every_n_epochs,
    )
    plans = plan_sweep(config, lrs, seeds, out)
    with as_usage_error((FileExistsError, NotADirectoryError, PermissionError), "'--out'"):
        check_outputs([run_dir for _, run_dir in plans], overwrite=overwrite)  # every run, before any training
    progress = progress_printer(quiet)
    if progress is not None:
        progress(f"kstiff train: loading TensorFlow and data {data!r} ...")
    result = train_sweep(config, lrs, out, seeds=seeds, overwrite=overwrite, figures=not no_figures, progress=progress)
    if fmt == "json":
        echo_json(result)
        return
    texts = [train_summary_text(summary) for summary in result["runs"]]
    click.echo("\n\n".join(texts))
    if len(result["runs"]) > 1:
        n_lr = len({r["train"]["lr"] for r in result["runs"]})
        n_seed = len({r["train"]["init_seed"] for r in result["runs"]})
        lines = [f"\nRuns: {len(result['runs'])} ({n_lr} learning rate(s) x {n_seed} seed(s))"]
        lines += [f"  lr {r['train']['lr']:g}  seed {r['train']['init_seed']}  {r['run_dir']}" for r in result["runs"]]
        click.echo("\n".join(lines))
    if result["sweep_figure"]:
        click.echo(f"\nSweep figure (xi vs learning rate): {result['sweep_figure']}")
