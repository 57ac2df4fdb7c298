"""``kstiff analyze MODEL``: stiffness of a saved Keras model, post hoc."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

import click

from keras_stiffness.cli.errors import as_usage_error
from keras_stiffness.cli.options import data_options, echo_json, format_option, parse_name_list

ANALYZE_HELP = """Measure the stiffness of a saved Keras model (.keras, or legacy .h5) once.

Builds a class-stratified probe set from --data (inputs must match what the model was trained on),
then computes: class stiffness matrices for the train-train, train-val and val-val pair sets (sign
and cosine), within/between-class summaries, per-layer stiffness, stiffness vs distance in the
input space and in each layer's representation space, and the critical length xi per space.

Labels are given to the loss as stored: an .npz with one-hot y (keras.utils.to_categorical) suits a
model compiled with categorical_crossentropy (recorded as labels: one-hot). --targets regression
reads y of an .npz as regression targets (unchanged, no classes) and draws --probes random probes
(and as many held-out ones): no class matrices, the mean stiffness over all pairs instead.

Prints a table (default) or JSON (--format json: stdout carries only the JSON). --out writes the
same one-row HDF5 run file the training callback writes (readable by kstiff inspect / plot).

Memory stays within --memory-budget (default: 2 GiB, or a quarter of the machine's memory when
that is less) at any number of probes: the Gram matrix is formed and summarized block by block, never
whole. Measurements longer than a few seconds show their progress on stderr. --save-gram also writes
the matrix into the run file, block by block.

Several processes share the work when TF_CONFIG describes a cluster (tf.distribute's
MultiWorkerMirroredStrategy): start the same command in every worker; each forms its share of the Gram
blocks, the sums are combined with TensorFlow's collectives, and only the chief prints and writes --out.

Files are loaded in Keras' safe mode: a model with Lambda layers needs --unsafe (only for files you
trust). Custom layers or models need --custom-objects module:attr (repeatable; a class, function or
dict; modules are imported from the current folder too), unless Keras already knows them.
"""


@click.command("analyze", help=ANALYZE_HELP, short_help="Stiffness of a saved Keras model.")
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=True))
@data_options
@click.option(
    "--targets",
    "target_kind",
    type=click.Choice(["classes", "regression"]),
    default="classes",
    show_default=True,
    help="What y of --data holds: class labels (ids or one-hot rows), or regression targets (.npz only).",
)
@click.option(
    "--probes",
    "n_probes",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="With --targets regression: training probes drawn at random (and as many held-out). Default: 200.",
)
@click.option(
    "--layers",
    default=None,
    metavar="NAME[,NAME...]",
    help="Layers whose representation spaces get distance curves and xi. Default: all layers with weights.",
)
@click.option(
    "--metric",
    type=click.Choice(["cosine", "euclidean"]),
    default="cosine",
    show_default=True,
    help="Distance between representations: 1 - cos, or Euclidean.",
)
@click.option("--bins", type=click.IntRange(min=1), default=20, show_default=True, help="Distance bins.")
@click.option(
    "--loss",
    default=None,
    metavar="NAME",
    help="Loss to differentiate (a Keras loss name). Default: the model's compiled loss.",
)
@click.option(
    "--unsafe",
    is_flag=True,
    help="Allow Lambda layers and other arbitrary code in the file (safe_mode=False). Only for files you trust.",
)
@click.option(
    "--custom-objects",
    "custom_specs",
    multiple=True,
    metavar="MODULE:ATTR",
    help="Import MODULE and pass ATTR (a class or function, or a dict of them) to Keras' loader. Repeatable.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="RUN.h5",
    help="Also write the measurement as a one-row run file.",
)
@click.option("--overwrite", is_flag=True, help="Replace the --out file if it exists.")
@click.option(
    "--memory-budget",
    default=None,
    metavar="SIZE",
    help="Memory for the measurement's Gram blocks and summaries, e.g. 2GiB or 500MB. Default: min(2GiB, memory/4).",
)
@click.option(
    "--block-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Probes per Gram block, instead of the size the memory budget allows.",
)
@click.option("--save-gram", is_flag=True, help="Also write the (N, N) Gram matrix into the --out run file.")
@click.option(
    "--gram-dtype",
    type=click.Choice(["float64", "float32"]),
    default="float64",
    show_default=True,
    help="How --save-gram stores the matrix (float32: half the size).",
)
@click.option("--large-gram", is_flag=True, help="Allow a saved Gram matrix over 2 GiB (N > 16,384 in float64).")
@format_option
def analyze_command(
    model_path,
    data,
    data_dir,
    per_class,
    val_per_class,
    seed,
    target_kind,
    n_probes,
    layers,
    metric,
    bins,
    loss,
    unsafe,
    custom_specs,
    out,
    overwrite,
    memory_budget,
    block_size,
    save_gram,
    gram_dtype,
    large_gram,
    fmt,
):
    from keras_stiffness.app.analysis import (
        analysis_result,
        analyze,
        check_model_fits,
        load_model,
        parse_custom_objects,
    )
    from keras_stiffness.measure.distribute import cluster_size_from_env
    from keras_stiffness.validation import check_memory_budget, check_writable

    with as_usage_error(ValueError, "'--memory-budget'"):
        budget = None if memory_budget is None else check_memory_budget(memory_budget, "--memory-budget")
    if save_gram and out is None:
        raise click.BadParameter("writes into the run file: pass --out RUN.h5 too.", param_hint="'--save-gram'")
    with as_usage_error(ValueError, "TF_CONFIG"):
        workers = cluster_size_from_env()
    if save_gram and workers > 1:
        raise click.BadParameter(
            f"needs the whole Gram matrix in one process; TF_CONFIG describes {workers} workers, each forming a "
            "share. Run one process for --save-gram.",
            param_hint="'--save-gram'",
        )

    regression = target_kind == "regression"
    if n_probes is not None and not regression:
        raise click.BadParameter(
            "is for --targets regression; class probes are set with --per-class/--val-per-class.",
            param_hint="'--probes'",
        )
    if regression and val_per_class is not None:
        raise click.BadParameter(
            "is for class labels; with --targets regression, --probes N sets both parts.",
            param_hint="'--val-per-class'",
        )
    if regression and not str(data).lower().endswith(".npz"):
        raise click.BadParameter(
            f"regression needs --data FILE.npz (arrays x and y, y the targets); {data!r} is a classification dataset.",
            param_hint="'--targets'",
        )
    if out is not None:
        if os.path.exists(out) and not overwrite:
            raise click.BadParameter(
                f"{out!r} already exists; pass --overwrite to replace it, or choose another path.", param_hint="'--out'"
            )
        with as_usage_error(OSError, "'--out'"):
            check_writable(out, overwrite=overwrite, exists_fix="Pass --overwrite to replace it.")
    strategy = None
    if workers > 1:  # before any TensorFlow op: TensorFlow sets up its collectives at startup
        from keras_stiffness.measure.distribute import strategy_from_env

        strategy = strategy_from_env()
    if custom_specs and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules of the current folder import
    with as_usage_error((ValueError, TypeError), "'--custom-objects'"):
        custom_objects = parse_custom_objects(custom_specs)
    with _quiet_absl():
        model = load_model(model_path, unsafe=unsafe, custom_objects=custom_objects)
    if loss is None and getattr(model, "loss", None) is None:
        raise click.ClickException(
            f"Model file {model_path!r} holds a model without a compiled loss; pass --loss NAME "
            "(e.g. --loss sparse_categorical_crossentropy)."
        )

    from keras_stiffness.app.report import analysis_text
    from keras_stiffness.app.train import make_probes
    from keras_stiffness.data.sources import load_data
    from keras_stiffness.measure.adapters import as_adapter, model_input_shape, select_layers
    from keras_stiffness.measure.config import MeasureConfig

    dataset = load_data(data, data_dir=data_dir, seed=seed, targets=target_kind)
    dataset, note = check_model_fits(model, dataset)  # may reshape the inputs to the model's shape
    if note:
        click.echo(note, err=True)
    adapter = as_adapter(model, loss=loss)  # the edge: from here on only the adapter protocol is used
    layer_names = parse_name_list(layers)
    if layer_names is not None:
        with as_usage_error(ValueError, "'--layers'"):
            select_layers(adapter.layer_names(), layer_names)
    if regression:
        probes = make_probes(dataset, n=n_probes, seed=seed)
    else:
        probes = make_probes(dataset, per_class=per_class, val_per_class=val_per_class, seed=seed)
    config = MeasureConfig(
        layers=layer_names if layer_names is not None else "all",
        metric=metric,
        bins=bins,
        save_gram=save_gram,
        gram_dtype=gram_dtype,
    )
    if save_gram:
        from keras_stiffness.store.layout import check_gram_size

        with as_usage_error(ValueError, "'--save-gram'"):
            check_gram_size(probes.n, gram_dtype, large_gram=large_gram)
    from keras_stiffness.measure.distribute import is_chief, worker_share
    from keras_stiffness.measure.progress import Progress

    m, info, description = analyze(
        adapter,
        probes,
        config,
        memory_budget=budget,
        block_size=block_size,
        strategy=strategy,
        progress=Progress("kstiff analyze"),
        out=out,
        overwrite=overwrite,
        large_gram=large_gram,
        extra_config={"analyze": {"model_path": os.path.abspath(model_path), "data": data, "targets": target_kind}},
    )
    if not is_chief(strategy):
        index, count = worker_share(strategy)
        click.echo(
            f"worker {index} of {count}: formed {info.plan['worker_pairs']} of {info.plan['block_pairs']} Gram block "
            "pairs; the chief prints the result and writes --out.",
            err=True,
        )
        return
    result = analysis_result(
        m, probes, description, model_path=model_path, input_shape=model_input_shape(model), metric=metric, run_file=out
    )
    if fmt == "json":
        echo_json(result)
        return
    click.echo(analysis_text(result))
    if out is not None:
        click.echo(f"\nRun file: {out}")


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence absl's warnings while Keras loads a model ("compiled metrics have yet to be built")."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
