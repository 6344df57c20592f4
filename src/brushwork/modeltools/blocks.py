"""Per-block merge weights, as the "merge block weighted" tools take them.

The UNet of an LDM checkpoint is numbered in blocks: ``input_blocks.0`` .. ``input_blocks.N``
(IN00..), ``middle_block`` (M00) and ``output_blocks.0`` .. (OUT00..). SD 1.x/2.x have 12 input
and 12 output blocks, so 25 weights (IN00-IN11, M00, OUT00-OUT11); SDXL has 9 and 9, so 19.
A list may also start with one more value, BASE, for every key outside those blocks (time
embedding, the final `out` layers, text encoders, VAE); without it those keys take the merge's
base alpha. The block count is read from the checkpoint itself, so non-standard sizes work too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from brushwork.core.errors import ConfigError

UNET_PREFIX = "model.diffusion_model."
_BLOCK = re.compile(r"^model\.diffusion_model\.(input_blocks|middle_block|output_blocks)\.(\d+)\.")
_LABELS = {"input_blocks": "IN", "middle_block": "M", "output_blocks": "OUT"}


def block_label(key: str) -> str | None:
    """`IN03`, `M00`, `OUT11` for a UNet block key; None for any other key."""
    match = _BLOCK.match(key)
    if match is None:
        return None
    kind, number = match.groups()
    if kind == "middle_block":
        return "M00"
    return f"{_LABELS[kind]}{int(number):02d}"


def block_labels(keys: Iterable[str]) -> tuple[str, ...]:
    """Every block of a checkpoint, in merge-tool order (IN.., M00, OUT..)."""
    found = {label for key in keys if (label := block_label(key)) is not None}
    inputs = sorted((label for label in found if label.startswith("IN")), key=_number)
    outputs = sorted((label for label in found if label.startswith("OUT")), key=_number)
    return (*inputs, *(["M00"] if "M00" in found else []), *outputs)


def _number(label: str) -> int:
    return int(label.lstrip("INOUTM"))


def parse_block_weights(text: str) -> tuple[float, ...]:
    """`0,0.5,1,...` (commas or spaces) -> floats."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"block weights {text!r} are not numbers", hint="give comma-separated values"
        ) from None


@dataclass(frozen=True)
class BlockWeights:
    """The alpha of every UNet block, and of everything else (`base`)."""

    base: float
    blocks: dict[str, float]

    @classmethod
    def from_values(
        cls, values: Sequence[float], labels: Sequence[str], base_alpha: float
    ) -> BlockWeights:
        """Weights for `labels` (from `block_labels`); one extra leading value is BASE."""
        if len(values) == len(labels) + 1:
            return cls(float(values[0]), dict(zip(labels, map(float, values[1:]), strict=True)))
        if len(values) != len(labels):
            first, last = (labels[0], labels[-1]) if labels else ("-", "-")
            raise ConfigError(
                f"{len(values)} block weights given; this model has {len(labels)} UNet blocks "
                f"({first} .. {last})",
                hint=f"give {len(labels)} values (or {len(labels) + 1} with BASE first); "
                "SD 1.x/2.x take 25, SDXL 19",
            )
        return cls(base_alpha, dict(zip(labels, map(float, values), strict=True)))

    def alpha_for(self, key: str) -> float:
        label = block_label(key)
        return self.base if label is None else self.blocks.get(label, self.base)

    def as_list(self) -> list[float]:
        return [self.base, *self.blocks.values()]
