"""Optimisers and learning-rate schedules by sd-scripts' names."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.training.optim import (
    ParamGroup,
    build_optimizer,
    build_scheduler,
    choose_optimizer,
    parse_optimizer_args,
    warmup_steps,
)


def _groups(lrs: tuple[float, float] = (5e-5, 1e-4)) -> list[ParamGroup]:
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))
    return [ParamGroup("textencoder", (a,), lrs[0]), ParamGroup("unet", (b,), lrs[1])]


def _step(optimizer: torch.optim.Optimizer) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    loss = sum((p**2).sum() for p in params)
    loss.backward()  # type: ignore[union-attr]
    optimizer.step()


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("AdamW", None),
        ("adamw", None),
        ("SGDNesterov", None),
        ("Lion", "lion_pytorch"),
        ("Prodigy", "prodigyopt"),
        ("Adafactor", None),
    ],
)
def test_optimizers_construct_keep_group_lrs_and_step(name: str, package: str | None) -> None:
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    groups = _groups((1.0, 0.5)) if name == "Prodigy" else _groups()
    before = [p.detach().clone() for g in groups for p in g.params]
    optimizer = build_optimizer(choose_optimizer(name), groups)
    rates = [g["lr"] for g in optimizer.param_groups]
    if name == "Prodigy":  # one step size for all groups (sd-scripts: the first lr counts)
        assert rates == [1.0, 1.0]
    elif name != "Adafactor":  # relative_step Adafactor: one group, lr None
        assert rates == [5e-5, 1e-4]
    _step(optimizer)
    after = [p.detach() for g in groups for p in g.params]
    assert all(not torch.equal(x, y) for x, y in zip(before, after, strict=True))


def test_optimizer_args_are_python_literals() -> None:
    args = parse_optimizer_args(["weight_decay=0.1", "betas=0.9,0.99", "decouple=True", "x=abc"])
    assert args == {"weight_decay": 0.1, "betas": (0.9, 0.99), "decouple": True, "x": "abc"}
    choice = choose_optimizer("AdamW", ["weight_decay=0.1", "betas=0.9,0.99"])
    optimizer = build_optimizer(choice, _groups())
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    assert choice.description == "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))"
    with pytest.raises(ConfigError, match="not key=value"):
        parse_optimizer_args(["weight_decay"])


def test_unknown_or_missing_optimizer_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="optimizer_type 'Rocket' is not supported"):
        choose_optimizer("Rocket")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a)
    )
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        choose_optimizer("AdamW8bit")


def _lrs(name: str, total: int = 10, **kwargs: object) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(name, optimizer, total_steps=total, **kwargs)  # type: ignore[arg-type]
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_schedules_follow_their_shapes() -> None:
    assert _lrs("constant") == [1.0] * 10
    assert _lrs("constant_with_warmup", warmup=2)[:3] == [0.0, 0.5, 1.0]
    linear = _lrs("linear", warmup=0)
    assert linear[0] == 1.0 and linear[5] == pytest.approx(0.5)
    cosine = _lrs("cosine")
    assert cosine[5] == pytest.approx(0.5) and cosine[9] < 0.03
    restarts = _lrs("cosine_with_restarts", num_cycles=2)
    assert restarts[0] == restarts[5] == 1.0  # back to the top at the start of cycle 2
    assert _lrs("polynomial", power=2.0)[5] == pytest.approx(0.25, abs=1e-6)


def test_adafactor_schedule_and_unknown_scheduler() -> None:
    choice = choose_optimizer("Adafactor")
    assert choice.relative_step
    optimizer = build_optimizer(choice, _groups())
    scheduler = build_scheduler("adafactor", optimizer, total_steps=5, initial_lr=1e-3)
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="lr_scheduler 'warp'"):
        build_scheduler("warp", optimizer, total_steps=5)


def test_warmup_is_a_count_or_a_ratio() -> None:
    assert warmup_steps(5, 100) == 5
    assert warmup_steps(0.1, 100) == 10
    with pytest.raises(ConfigError):
        warmup_steps(-1, 100)
