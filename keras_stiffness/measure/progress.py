"""Progress of a long measurement on stderr: blocks done of total, time spent, time left.

Quiet for short work: nothing is shown before ``delay`` seconds. On a terminal one line is redrawn in
place (``\\r``); elsewhere (a log file, a notebook, beside Keras' own progress bar) a whole line is
written at most every ``interval`` seconds, and a last line when the work is done.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _clock(seconds: float) -> str:
    """``'42 s'``, ``'3 min 05 s'`` or ``'1 h 02 min'``.

    Example:
        >>> _clock(4.2), _clock(185), _clock(3720)
        ('4 s', '3 min 05 s', '1 h 02 min')
    """
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """A ``progress(done, total)`` callable for :func:`~keras_stiffness.measure.measuring.measure`
    (called with ``done=0`` when the work starts).

    Args:
        label: What is measured, at the start of each line.
        stream: Where to write (default ``sys.stderr``).
        delay: Seconds of silence before the first line (short measurements show nothing).
        interval: Fewest seconds between two lines when ``stream`` is not a terminal.
        in_place: Redraw one line with ``\\r``; default: when ``stream`` is a terminal.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> progress = Progress("stiffness", stream=out, delay=0.0, interval=0.0)
        >>> for done in (0, 1, 2, 3):
        ...     progress(done, 3)
        >>> out.getvalue().splitlines()[-1].startswith("stiffness: 3/3 blocks")
        True
    """

    def __init__(
        self,
        label: str = "stiffness",
        *,
        stream: Optional[TextIO] = None,
        delay: float = 3.0,
        interval: float = 10.0,
        in_place: Optional[bool] = None,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.delay, self.interval = float(delay), float(interval)
        isatty = getattr(self.stream, "isatty", None)
        self.in_place = bool(isatty and isatty()) if in_place is None else bool(in_place)
        self._start: Optional[float] = None
        self._last = -float("inf")
        self._shown = False

    def line(self, done: int, total: int, now: float) -> str:
        """The text shown after ``done`` of ``total`` blocks."""
        spent = now - (self._start or now)
        text = f"{self.label}: {done}/{total} blocks, {_clock(spent)}"
        if 0 < done < total:
            text += f", about {_clock(spent * (total - done) / done)} left"
        return text

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self._start is None or done == 0:
            self._start = now
        if done == 0:
            return
        finished = done >= total
        if now - self._start < self.delay and not (finished and self._shown):
            return
        if not finished and not self.in_place and now - self._last < self.interval:
            return
        self._last = now
        self._shown = True
        text = self.line(done, total, now)
        if self.in_place:
            self.stream.write("\r" + text + ("\n" if finished else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        if finished:  # ready for the next measurement
            self._start, self._last, self._shown = None, -float("inf"), False
