"""Options shared by several commands, and their validation (Click only; no heavy imports)."""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional

import click

from keras_stiffness.cli.errors import one_line

DATA_HELP = (
    "Data source: 'digits' (scikit-learn's 8x8 digits, bundled, no download); the paper's datasets "
    "'mnist', 'fashion_mnist', 'cifar10' or 'cifar100' (read from --data-dir, never downloaded; the "
    "train split for training, the test split held out; pixels scaled to [0, 1], then standardized; "
    "28x28x1 or 32x32x3); 'tfds:NAME[:SPLIT]' (any TensorFlow Datasets image set already prepared on "
    "disk, e.g. tfds:cifar10:train[:10%]; never downloaded) or a path to an .npz with arrays x, y "
    "(optionally x_val, y_val, class_names)."
)


def check_data(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Validate the form of ``--data`` (usage error, exit 2, for a malformed or missing source)."""
    from keras_stiffness.data.sources import parse_source

    try:
        kind, name, _ = parse_source(value)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(one_line(exc), ctx=ctx, param=param) from exc
    if kind == "npz" and not os.path.isfile(name):
        raise click.BadParameter(
            f"file {name!r} does not exist; expected an .npz file with arrays x and y.",
            ctx=ctx,
            param=param,
        )
    return value


def data_options(func: Callable) -> Callable:
    """``--data``, ``--data-dir``, ``--per-class``, ``--val-per-class``, ``--seed``."""
    options = [
        click.option(
            "--data", "data", default="digits", show_default=True, metavar="SOURCE", callback=check_data, help=DATA_HELP
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=None,
            metavar="DIR",
            help="TensorFlow Datasets data directory for the presets (mnist, ..., cifar100) and tfds: sources. "
            "Default: $TFDS_DATA_DIR, else ~/tensorflow_datasets.",
        ),
        click.option(
            "--per-class",
            type=click.IntRange(min=1),
            default=50,
            show_default=True,
            help="Training probes per class (the paper uses about 50; 30 for 100 classes).",
        ),
        click.option(
            "--val-per-class",
            type=click.IntRange(min=1),
            default=None,
            help="Held-out probes per class. Default: --per-class, capped at the smallest held-out class.",
        ),
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Seed of the data split and the probe choice (and, for train, of the initialization and shuffling).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Readable table, or JSON (stdout then carries only the JSON).",
)


def list_parts(values) -> Iterator[str]:
    """The items of a repeated and/or comma-separated option (``--lr 1e-4,3e-4 --lr 1e-3``), stripped."""
    for value in values or ():
        for part in str(value).split(","):
            if part.strip():
                yield part.strip()


def parse_float_list(ctx: click.Context, param: click.Parameter, values) -> List[float]:
    """Repeated and/or comma-separated positive numbers, e.g. ``--lr 1e-4,3e-4 --lr 1e-3``."""
    out: List[float] = []
    for part in list_parts(values):
        try:
            number = float(part)
        except ValueError as exc:
            raise click.BadParameter(
                f"{part!r} is not a number; expected positive numbers such as 1e-3, repeated or "
                "comma-separated (--lr 1e-4,1e-3).",
                ctx=ctx,
                param=param,
            ) from exc
        if not number > 0 or number == float("inf"):
            raise click.BadParameter(f"{part!r} is not a positive finite number.", ctx=ctx, param=param)
        out.append(number)
    return out


def parse_seed_list(ctx: click.Context, param: click.Parameter, values) -> Optional[List[int]]:
    """Repeated and/or comma-separated non-negative integers (``--seeds 0,1 --seeds 2``); None if absent."""
    out: List[int] = []
    for part in list_parts(values):
        try:
            seed = int(part)
        except ValueError as exc:
            raise click.BadParameter(
                f"{part!r} is not an integer; expected non-negative integers such as 0, repeated or "
                "comma-separated (--seeds 0,1,2).",
                ctx=ctx,
                param=param,
            ) from exc
        if seed < 0:
            raise click.BadParameter(f"{part!r} is negative; expected seeds >= 0.", ctx=ctx, param=param)
        if seed not in out:
            out.append(seed)
    return out or None


def parse_name_list(value: Optional[str]) -> Optional[List[str]]:
    """``"a,b"`` -> ``["a", "b"]``; None or empty -> None."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


def echo_json(obj) -> None:
    """Print ``obj`` as JSON on stdout (NaN already turned into null by the report helpers)."""
    import json

    click.echo(json.dumps(obj, indent=2, allow_nan=False))


def progress_printer(quiet: bool) -> Optional[Callable[[str], None]]:
    """A progress callable writing to stderr, or None when quiet."""
    if quiet:
        return None
    return lambda line: click.echo(line, err=True)
