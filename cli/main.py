"""The ``kstiff`` command: train with stiffness measurements, analyze saved models, plot and inspect runs.

Only Click is imported here and in the command modules at import time; TensorFlow, Keras, h5py and
matplotlib are imported inside the commands, so ``kstiff --help`` answers at once.

TensorFlow's C++ start-up notices (oneDNN, "Could not find cuda drivers", ...) are kept off stderr, other
lines printed while TensorFlow loads are shown (:mod:`keras_stiffness.cli.tf_quiet`); ``--debug`` shows all.

Errors: a bad option or a missing file is a usage error (exit 2); a bad file, a model that does not
fit the data, missing data and other known failures print ``Error: <message>`` on one line (exit 1).
``kstiff --debug ...`` (or ``KSTIFF_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import os

import click

from keras_stiffness.cli import tf_quiet
from keras_stiffness.cli.commands_analyze import analyze_command
from keras_stiffness.cli.commands_runs import inspect_command, plot_command
from keras_stiffness.cli.commands_train import train_command
from keras_stiffness.cli.errors import KstiffGroup

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=KstiffGroup, context_settings=CONTEXT)
@click.version_option(package_name="keras_stiffness", prog_name="kstiff")
@click.option("--debug", is_flag=True, envvar="KSTIFF_DEBUG", help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """kstiff: measure stiffness (Fort et al., arXiv 1901.09491) of Keras models.

    Stiffness asks whether a gradient step on one example also lowers the loss on another: the sign
    and cosine of g1.g2 for per-example loss gradients. Results on stdout, progress on stderr.

    \b
    kstiff train                  train the paper's net on digits, measuring along training
    kstiff analyze MODEL.keras    stiffness of a saved model, once
    kstiff plot RUN.h5 ...        figures of run files
    kstiff inspect RUN.h5         what a run file holds
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if not debug:  # TensorFlow's C++ start-up notices stay off stderr (see tf_quiet); --debug shows them
        tf_quiet.install()
        ctx.call_on_close(tf_quiet.uninstall)


cli.add_command(train_command)
cli.add_command(analyze_command)
cli.add_command(plot_command)
cli.add_command(inspect_command)


def main() -> None:
    """Console-script entry point (``kstiff``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="kstiff")


if __name__ == "__main__":
    main()
