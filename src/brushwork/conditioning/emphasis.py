"""Emphasis: how per-token weights change the text encoder's output (A1111's `sd_emphasis.py`).

* ``Original`` (A1111's default): multiply each token's hidden state by its weight, then scale the
  whole batch so its mean is what it was before (one scalar over batch x 77 x width).
* ``No norm``: multiply only.
* ``Ignore``: weights are parsed (so ``BREAK`` and bracket removal still apply) but not used.
* ``None``: nothing is parsed; brackets and ``BREAK`` stay in the text as words.

The arithmetic follows A1111's: weights are float32, so a half-precision output is multiplied
and rescaled in float32 (the mean before weighting is taken in the output's own precision).
"""

from __future__ import annotations

import torch

from brushwork.core.errors import ConfigError

ORIGINAL = "Original"
NO_NORM = "No norm"
IGNORE = "Ignore"
NONE = "None"
EMPHASIS_MODES = (ORIGINAL, NO_NORM, IGNORE, NONE)


def check_emphasis(mode: str) -> str:
    """`mode` when it is one of EMPHASIS_MODES, else a ConfigError naming them."""
    if mode not in EMPHASIS_MODES:
        raise ConfigError(
            f"unknown emphasis mode {mode!r}",
            hint=f"use one of {', '.join(EMPHASIS_MODES)} (A1111's default is {ORIGINAL!r})",
        )
    return mode


def apply_emphasis(hidden: torch.Tensor, multipliers: torch.Tensor, mode: str) -> torch.Tensor:
    """Weighted hidden states: `hidden` [batch, tokens, width], `multipliers` [batch, tokens]
    (float32). Modes that do not weigh return `hidden` itself."""
    if mode in (IGNORE, NONE):
        return hidden
    weighted = hidden * multipliers.to(hidden.device).unsqueeze(-1)
    if mode == NO_NORM:
        return weighted
    original_mean = hidden.mean()
    return weighted * (original_mean / weighted.mean())
