"""A1111's learning-rate schedule strings for textual inversion and hypernetworks.

Syntax: comma-separated ``rate:until_step`` pairs; a bare ``rate`` (or ``rate:-1``) runs until
the last step and ends the list. ``"0.005:100, 1e-3:1000, 1e-5"`` trains with 0.005 while fewer
than 100 steps are done, 1e-3 until 1000, then 1e-5 up to the maximum. A pair whose end is not
after the previous one's is skipped; an end past the maximum is cut to it. As in A1111, training
stops where the schedule ends: ``"0.005:100"`` with a maximum of 1000 trains 100 steps.

Steps are absolute: a run that continues a file already trained 150 steps (A1111's
`initial_step`) reads the schedule from step 150 on, so its first step uses 1e-3 above, and it
stops at the same end step as a run from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from brushwork.core.errors import ConfigError

EXAMPLE = "0.005:100, 1e-3:1000, 1e-5"


@dataclass(frozen=True)
class LearnRateSchedule:
    """(rate, end step) pairs: `rate` applies while the steps done are below `end`."""

    pieces: tuple[tuple[float, int], ...]

    @property
    def end_step(self) -> int:
        """The number of steps the schedule trains."""
        return self.pieces[-1][1]

    def rate_at(self, steps_done: int) -> float:
        """The rate of the step after `steps_done` steps (the last rate past the end)."""
        for rate, end in self.pieces:
            if steps_done < end:
                return rate
        return self.pieces[-1][0]


def parse_learn_schedule(text: str | float, max_steps: int) -> LearnRateSchedule:
    """Parse A1111's schedule syntax (a plain number is one rate for every step)."""
    if max_steps < 1:
        raise ConfigError(f"the maximum number of steps is {max_steps}; it must be at least 1")
    pieces: list[tuple[float, int]] = []
    last_end = 0
    for raw in str(text).split(","):
        item = raw.strip()
        if not item:
            continue
        rate_text, sep, end_text = item.partition(":")
        rate = float(_number(rate_text, text, float))
        end = int(_number(end_text, text, int)) if sep else -1
        if rate < 0:
            raise _invalid(text, f"the rate {rate_text.strip()!r} is negative")
        if end == -1 or end >= max_steps:
            pieces.append((rate, max_steps))
            break
        if end > last_end:
            pieces.append((rate, end))
            last_end = end
    if not pieces:
        raise _invalid(text, "it names no rate")
    return LearnRateSchedule(tuple(pieces))


def _number(piece: str, text: str | float, kind: Callable[[str], float | int]) -> float | int:
    try:
        return kind(piece.strip())
    except ValueError:
        raise _invalid(text, f"{piece.strip()!r} is not a number") from None


def _invalid(text: str | float, why: str) -> ConfigError:
    return ConfigError(
        f"invalid learning-rate schedule {str(text)!r}: {why}",
        hint=f"write a number, or rate:step pairs such as {EXAMPLE!r}",
    )


def schedule_lambda(
    schedule: LearnRateSchedule, processes: int = 1, start_step: int = 0
) -> Callable[[int], float]:
    """A `LambdaLR` factor for param groups whose lr is 1.0: the scheduled rate itself.

    A prepared scheduler steps once per process per optimiser step (accelerate's rule), so the
    scheduler's count is divided by `processes`. The scheduler counts this run's steps; the
    schedule is read at the absolute step, `start_step` (the steps done before) plus that."""

    def factor(count: int) -> float:
        return schedule.rate_at(start_step + count // max(1, processes))

    return factor


def schedule_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: LearnRateSchedule,
    processes: int = 1,
    start_step: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A LambdaLR following `schedule` from `start_step` on (every param group's lr must be
    1.0)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule_lambda(schedule, processes, start_step)
    )
