"""Turning library exceptions into Click errors: one line on stderr, exit 1 (or 2 for usage).

Library code raises; only the CLI converts. Commands convert the errors they expect at the call that
raises them (with the option to blame, for usage errors); :class:`KstiffGroup` is the safety net for
the known exception families of bad files and bad values. Anything else propagates (a real bug keeps
its traceback). ``kstiff --debug`` (or ``KSTIFF_DEBUG=1``) re-raises even the known ones.
"""

from __future__ import annotations

import contextlib
import zipfile
from typing import Iterator, Optional

import click

#: Exception families that mean "bad input" rather than "bug": bad values, bad or missing files,
#: h5py and Keras deserialization failures (which are OSError/ValueError/TypeError/KeyError).
KNOWN_ERRORS = (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace collapsed; KeyError without its quotes)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename!r}" if exc.filename else exc.strerror
    else:
        text = str(exc)
    text = " ".join(text.split())
    return text or type(exc).__name__


def usage_error(exc: BaseException, param_hint: Optional[str] = None) -> click.UsageError:
    """A :class:`click.BadParameter` (exit 2) naming the option, in the current command's context."""
    ctx = click.get_current_context(silent=True)
    if param_hint:
        return click.BadParameter(one_line(exc), ctx=ctx, param_hint=param_hint)
    return click.UsageError(one_line(exc), ctx=ctx)


@contextlib.contextmanager
def as_usage_error(types, param_hint: Optional[str] = None) -> Iterator[None]:
    """Within the block, exceptions of ``types`` become usage errors (exit 2) blaming ``param_hint``."""
    try:
        yield
    except types as exc:
        if _debug():
            raise
        raise usage_error(exc, param_hint) from exc


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and (root.obj or {}).get("debug"))


class KstiffGroup(click.Group):
    """A Click group that prints known library errors as ``Error: <message>`` (exit 1)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except KNOWN_ERRORS as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            raise click.ClickException(one_line(exc)) from exc
