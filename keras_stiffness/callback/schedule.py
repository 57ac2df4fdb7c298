"""When the callback measures: every n epochs, every n steps, log-spaced steps, or given steps."""

from __future__ import annotations

import bisect
from typing import List, Optional, Sequence, Union

from keras_stiffness.validation import check_int, check_optional_int


def log_steps(points_per_decade: int = 6, last: int = 10**9) -> List[int]:
    """Distinct integer steps ``≥ 1``, about ``points_per_decade`` per decade: 1, 2, 3, 5, 7, 10, ...

    Example:
        >>> log_steps(4, 100)
        [1, 2, 3, 6, 10, 18, 32, 56, 100]
    """
    points_per_decade = check_int(points_per_decade, "points_per_decade")
    steps, k = [], 0
    while True:
        s = int(round(10 ** (k / points_per_decade)))
        if s > last:
            return steps
        if not steps or s > steps[-1]:
            steps.append(s)
        k += 1


class StepSchedule:
    """The measurement schedule of a callback (step 0 is always measured by the callback itself).

    Args:
        every_n_epochs: Measure at every n-th epoch end (None: not by epochs).
        steps: Sorted optimizer steps at which to measure (None: not by steps).
        every_n_steps: Measure when ``step % n == 0``.

    Example:
        >>> s = StepSchedule(every_n_epochs=None, steps=[1, 2, 5])
        >>> [s.step_due(k) for k in (1, 3, 5)]
        [True, False, True]
    """

    def __init__(
        self,
        every_n_epochs: Optional[int],
        steps: Optional[Sequence[int]] = None,
        every_n_steps: Optional[int] = None,
        label: str = "",
    ):
        self.every_n_epochs = every_n_epochs
        self.steps = sorted(set(int(s) for s in steps)) if steps is not None else None
        self.every_n_steps = every_n_steps
        self.label = label

    @property
    def uses_steps(self) -> bool:
        return self.steps is not None or self.every_n_steps is not None

    def epoch_due(self, epochs_done: int) -> bool:
        return self.every_n_epochs is not None and epochs_done % self.every_n_epochs == 0

    def step_due(self, step: int) -> bool:
        if self.every_n_steps is not None and step % self.every_n_steps == 0:
            return True
        if self.steps is not None:
            i = bisect.bisect_left(self.steps, step)
            return i < len(self.steps) and self.steps[i] == step
        return False

    def describe(self) -> dict:
        return {
            "every_n_epochs": self.every_n_epochs,
            "every_n_steps": self.every_n_steps,
            "schedule": self.label or (None if self.steps is None else "steps"),
            "n_steps_listed": None if self.steps is None else len(self.steps),
        }


def make_schedule(
    every_n_epochs: Optional[int],
    schedule: Union[None, str, Sequence[int]],
    every_n_steps: Optional[int],
    points_per_decade: int = 6,
) -> StepSchedule:
    """Validate the callback's schedule arguments and build the schedule."""
    every_n_epochs = check_optional_int(every_n_epochs, "every_n_epochs", fix="Pass None to measure by steps only.")
    every_n_steps = check_optional_int(every_n_steps, "every_n_steps", fix="Pass None to measure by epochs only.")
    points_per_decade = check_int(points_per_decade, "points_per_decade")
    steps = None
    label = ""
    if isinstance(schedule, str):
        if schedule != "log":
            raise ValueError(f"Received schedule={schedule!r}; expected 'log', a list of steps, or None.")
        steps, label = log_steps(points_per_decade), "log"
    elif schedule is not None:
        try:
            steps = [check_int(s, "a schedule step") for s in schedule]
        except TypeError as exc:
            raise ValueError(
                f"Received schedule={schedule!r}; expected 'log', a list of positive integer steps, or None."
            ) from exc
        except ValueError as exc:
            raise ValueError(f"Received schedule with steps {list(schedule)}; expected steps >= 1.") from exc
    uses_steps = steps is not None or every_n_steps is not None
    if every_n_epochs is None and not uses_steps:
        every_n_epochs = 1
    return StepSchedule(every_n_epochs, steps, every_n_steps, label)
