"""The numbers kohya prints before training ("running training / 学習開始"), computed its way.

With `L` = batches in one epoch over all processes (sum over buckets of
`ceil(images_in_bucket / batch_size)`, repeats and balanced reg images included),
`P` processes and `G` gradient-accumulation steps (kohya `train_network.py`):

- `--max_train_epochs E` sets `max_train_steps = E * ceil(L / P / G)`;
  otherwise `max_train_steps` is given (kohya's default is 1600);
- the loader of each process has `ceil(L / P)` batches (accelerate, even batches): this is the
  printed "num batches per epoch";
- `num epochs = ceil(max_train_steps / ceil(ceil(L / P) / G))`;
- "total optimization steps" is `max_train_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from brushwork.core.errors import ConfigError

KOHYA_DEFAULT_MAX_TRAIN_STEPS = 1600


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class PlannableDataset(Protocol):
    """What `step_plan` needs from a dataset."""

    @property
    def num_train_images(self) -> int: ...
    @property
    def num_reg_images(self) -> int: ...
    @property
    def num_buckets(self) -> int: ...
    @property
    def total_batches(self) -> int: ...
    @property
    def batch_sizes(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class StepPlan:
    """The numbers kohya prints, computed the same way."""

    num_train_images: int  # images x repeats (train subsets only)
    num_reg_images: int  # reg images x repeats, before balancing
    num_buckets: int
    batches_per_epoch: int  # per process: ceil(total_batches / num_processes)
    epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    total_steps: int  # optimisation steps (kohya max_train_steps)
    # additions beyond the shared contract
    total_batches: int = 0  # batches per epoch over all processes
    num_processes: int = 1
    update_steps_per_epoch: int = 0  # ceil(batches_per_epoch / gradient_accumulation_steps)
    batch_sizes: tuple[int, ...] = ()  # one per dataset (kohya prints them comma-separated)


def step_plan(
    dataset: PlannableDataset,
    *,
    max_train_epochs: int | None,
    max_train_steps: int | None,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
) -> StepPlan:
    """kohya's step arithmetic. `max_train_epochs` wins over `max_train_steps` (as in kohya);
    with neither, kohya's default of 1600 steps applies."""
    accum, procs = gradient_accumulation_steps, num_processes
    if accum < 1 or procs < 1:
        raise ConfigError("gradient_accumulation_steps and num_processes must be at least 1")
    total = dataset.total_batches
    if total < 1:
        raise ConfigError("the dataset has no batches to train on")
    if max_train_epochs is not None:
        if max_train_epochs < 1:
            raise ConfigError(f"max_train_epochs is {max_train_epochs}; it must be at least 1")
        steps = max_train_epochs * _ceil_div(total, procs * accum)
    else:
        steps = KOHYA_DEFAULT_MAX_TRAIN_STEPS if max_train_steps is None else max_train_steps
        if steps < 1:
            raise ConfigError(f"max_train_steps is {steps}; it must be at least 1")
    per_process = _ceil_div(total, procs)
    updates = _ceil_div(per_process, accum)
    sizes = dataset.batch_sizes
    return StepPlan(
        num_train_images=dataset.num_train_images,
        num_reg_images=dataset.num_reg_images,
        num_buckets=dataset.num_buckets,
        batches_per_epoch=per_process,
        epochs=_ceil_div(steps, updates),
        batch_size=sizes[0] if sizes else 1,
        gradient_accumulation_steps=accum,
        total_steps=steps,
        total_batches=total,
        num_processes=procs,
        update_steps_per_epoch=updates,
        batch_sizes=sizes,
    )


def format_step_plan(plan: StepPlan) -> str:
    """The plan as kohya's English log lines, so users can compare them side by side."""
    sizes = plan.batch_sizes or (plan.batch_size,)
    lines = [
        "running training",
        f"  num train images * repeats: {plan.num_train_images}",
        f"  num reg images: {plan.num_reg_images}",
        f"  num buckets: {plan.num_buckets}",
        f"  num batches per epoch: {plan.batches_per_epoch}",
        f"  num epochs: {plan.epochs}",
        f"  batch size per device: {', '.join(str(s) for s in sizes)}",
        f"  gradient accumulation steps = {plan.gradient_accumulation_steps}",
        f"  total optimization steps: {plan.total_steps}",
    ]
    if plan.num_processes > 1:
        lines.insert(
            5, f"  processes: {plan.num_processes} (batches over all: {plan.total_batches})"
        )
    return "\n".join(lines)
