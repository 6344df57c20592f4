"""Optimisers and learning-rate schedules by sd-scripts' names (`optimizer_type`, `lr_scheduler`).

Optimisers: AdamW (default), AdamW8bit (needs bitsandbytes), Lion (lion-pytorch), Prodigy
(prodigyopt), Adafactor (transformers; `relative_step=True` by default, as sd-scripts), SGDNesterov.
`optimizer_args` are sd-scripts' ``key=value`` strings; values are Python literals
(``betas=0.9,0.99`` is a tuple), anything else stays a string.

Schedules: constant, constant_with_warmup, linear, cosine, cosine_with_restarts
(`lr_scheduler_num_cycles`), polynomial (`lr_scheduler_power`), adafactor. `lr_warmup_steps` is
a step count, or a ratio of the total when below 1 (sd-scripts' rule).
"""

from __future__ import annotations

import ast
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from brushwork.core.errors import ConfigError

logger = logging.getLogger(__name__)

OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Prodigy", "Adafactor", "SGDNesterov")
SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "adafactor",
)
_OPTIONAL_PACKAGE = {"adamw8bit": "bitsandbytes", "lion": "lion_pytorch", "prodigy": "prodigyopt"}
_PIP_NAME = {
    "bitsandbytes": "bitsandbytes",
    "lion_pytorch": "lion-pytorch",
    "prodigyopt": "prodigyopt",
}


@dataclass(frozen=True)
class ParamGroup:
    """Parameters trained at one learning rate (`name` is what logs call it: unet, textencoder)."""

    name: str
    params: tuple[torch.nn.Parameter, ...]
    lr: float


@dataclass(frozen=True)
class OptimizerChoice:
    """A validated optimiser request."""

    name: str  # canonical, one of OPTIMIZERS
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """sd-scripts' `ss_optimizer` form: class path plus args in parentheses."""
        args = ",".join(f"{k}={v}" for k, v in self.args.items())
        return f"{_CLASS_PATHS[self.name]}({args})" if args else _CLASS_PATHS[self.name]

    @property
    def relative_step(self) -> bool:
        """Adafactor finds its own step size (then the lr is only the initial one)."""
        return self.name == "Adafactor" and bool(self.args.get("relative_step", True))


_CLASS_PATHS = {
    "AdamW": "torch.optim.adamw.AdamW",
    "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "Lion": "lion_pytorch.lion_pytorch.Lion",
    "Prodigy": "prodigyopt.prodigy.Prodigy",
    "Adafactor": "transformers.optimization.Adafactor",
    "SGDNesterov": "torch.optim.sgd.SGD",
}


def parse_optimizer_args(items: Sequence[str]) -> dict[str, Any]:
    """sd-scripts' ``key=value`` list -> a dict (values as Python literals where they parse)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"optimizer_args entry {item!r} is not key=value", hint="e.g. weight_decay=0.01"
            )
        try:
            value: Any = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        parsed[key.strip()] = value
    return parsed


def choose_optimizer(name: str, args: Sequence[str] = ()) -> OptimizerChoice:
    """Validate `optimizer_type` (case-insensitive) and its args; checks optional packages."""
    canonical = {n.lower(): n for n in OPTIMIZERS}.get(name.lower())
    if canonical is None:
        raise ConfigError(
            f"optimizer_type {name!r} is not supported", hint=f"use one of {', '.join(OPTIMIZERS)}"
        )
    package = _OPTIONAL_PACKAGE.get(canonical.lower())
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"optimizer_type {canonical} needs the {package} package, which is not installed",
            hint=f"pip install {_PIP_NAME[package]}, or use AdamW",
        )
    return OptimizerChoice(canonical, parse_optimizer_args(args))


def build_optimizer(choice: OptimizerChoice, groups: Sequence[ParamGroup]) -> torch.optim.Optimizer:
    """The optimiser over `groups` (each with its own lr)."""
    param_groups: list[dict[str, Any]] = [
        {"params": list(g.params), "lr": g.lr} for g in groups if g.params
    ]
    if not param_groups:
        raise ConfigError("nothing to train: every parameter group is empty")
    lr = param_groups[0]["lr"]
    args = dict(choice.args)
    if choice.name == "AdamW":
        return torch.optim.AdamW(param_groups, lr=lr, **args)
    if choice.name == "SGDNesterov":
        args.setdefault("momentum", 0.9)
        return torch.optim.SGD(param_groups, lr=lr, nesterov=True, **args)
    if choice.name == "AdamW8bit":
        import bitsandbytes  # optional, checked in choose_optimizer

        optimizer: torch.optim.Optimizer = bitsandbytes.optim.AdamW8bit(param_groups, lr=lr, **args)
        return optimizer
    if choice.name == "Lion":
        from lion_pytorch import Lion

        lion: torch.optim.Optimizer = Lion(param_groups, lr=lr, **args)
        return lion
    if choice.name == "Prodigy":
        prodigy: torch.optim.Optimizer = _prodigy(param_groups, lr, args)
        return prodigy
    adafactor: torch.optim.Optimizer = _adafactor(param_groups, lr, args)
    return adafactor


def _prodigy(param_groups: list[dict[str, Any]], lr: float, args: dict[str, Any]) -> Any:
    from prodigyopt import Prodigy

    if lr <= 0.1:
        logger.warning("Prodigy adapts the step size itself; a learning rate near 1.0 is usual")
    if len({g["lr"] for g in param_groups}) > 1:
        # Prodigy refuses groups with different lrs; sd-scripts: only the first one counts
        logger.warning("Prodigy: only the first learning rate (%g) is used for every group", lr)
        param_groups = [g | {"lr": lr} for g in param_groups]
    return Prodigy(param_groups, lr=lr, **args)


def _adafactor(param_groups: list[dict[str, Any]], lr: float, args: dict[str, Any]) -> Any:
    from transformers.optimization import Adafactor

    args.setdefault("relative_step", True)
    args.setdefault("scale_parameter", args["relative_step"])
    args.setdefault("warmup_init", False)
    if args["relative_step"]:
        # as sd-scripts: the lr only seeds the schedule; per-group lrs are dropped
        params = [p for g in param_groups for p in g["params"]]
        return Adafactor(params, lr=None, **args)
    return Adafactor(param_groups, lr=lr, **args)


def warmup_steps(value: float, total_steps: int) -> int:
    """`lr_warmup_steps`: a count, or below 1 a ratio of the total (sd-scripts' rule)."""
    if value < 0:
        raise ConfigError(f"lr_warmup_steps is {value}; it must be >= 0")
    return int(value * total_steps) if 0 < value < 1 else int(value)


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup: int = 0,
    num_cycles: int = 1,
    power: float = 1.0,
    initial_lr: float | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule over `total_steps` optimiser steps (the caller multiplies by the process
    count under accelerate, which steps a prepared scheduler once per process)."""
    if name not in SCHEDULERS:
        raise ConfigError(
            f"lr_scheduler {name!r} is not supported", hint=f"use one of {', '.join(SCHEDULERS)}"
        )
    if name == "adafactor":
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer, initial_lr=initial_lr or 0.0)  # type: ignore[no-any-return]
    from diffusers.optimization import get_scheduler

    return get_scheduler(  # type: ignore[no-any-return]
        name,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
        num_cycles=num_cycles,
        power=power,
    )


def current_learning_rates(
    optimizer: torch.optim.Optimizer, names: Sequence[str]
) -> dict[str, float]:
    """The lr each group runs at now (Prodigy/D-Adaptation: d·lr, the effective one)."""
    rates: dict[str, float] = {}
    for name, group in zip(names, optimizer.param_groups, strict=False):
        lr = float(group.get("lr") or 0.0)
        if "d" in group:  # Prodigy's adapted step size
            lr *= float(group["d"])
        rates[name] = lr
    return rates
