"""Brownian noise for the SDE solvers: correct increments, overlapping intervals, reproducible."""

from __future__ import annotations

import torch

from brushwork.samplers import batch_noise
from brushwork.samplers.brownian import BrownianNoise

LIKE = torch.zeros(1, 20_000)


def test_increments_are_standard_normal() -> None:
    brownian = BrownianNoise(batch_noise((20_000,), [1]), LIKE)
    for high, low in ((10.0, 4.0), (4.0, 3.9), (3.9, 0.5)):
        increment = brownian(high, low)
        assert abs(increment.mean().item()) < 0.03
        assert abs(increment.std().item() - 1.0) < 0.03


def test_overlapping_intervals_come_from_one_path() -> None:
    """W(t_next) - W(t) must contain W(s) - W(t) when s lies between: DPM++ SDE's two sub-steps."""
    brownian = BrownianNoise(batch_noise((20_000,), [2]), LIKE)
    t, s, t_next = 5.0, 2.0, 1.0
    first = brownian(t, s) * (t - s) ** 0.5  # W(s) - W(t)
    whole = brownian(t, t_next) * (t - t_next) ** 0.5  # W(t_next) - W(t)
    rest = brownian(s, t_next) * (s - t_next) ** 0.5  # W(t_next) - W(s)
    torch.testing.assert_close(whole, first + rest, atol=1e-5, rtol=0)
    correlation = torch.corrcoef(torch.stack([first.flatten(), whole.flatten()]))[0, 1]
    expected = ((t - s) / (t - t_next)) ** 0.5
    assert abs(correlation.item() - expected) < 0.02


def test_bridge_points_have_the_right_spread() -> None:
    brownian = BrownianNoise(batch_noise((20_000,), [3]), LIKE)
    brownian(10.0, 0.0)  # fixes both ends first
    inside = brownian(10.0, 4.0) * 6.0**0.5  # W(4) - W(10), drawn as a bridge between 0 and 10
    assert abs(inside.var().item() - 6.0) < 0.2  # a Brownian increment over a length of 6


def test_same_seed_same_path() -> None:
    one = BrownianNoise(batch_noise((8,), [4]), torch.zeros(1, 8))
    two = BrownianNoise(batch_noise((8,), [4]), torch.zeros(1, 8))
    assert torch.equal(one(3.0, 1.0), two(3.0, 1.0))
    assert torch.equal(one(3.0, 2.0), two(3.0, 2.0))
