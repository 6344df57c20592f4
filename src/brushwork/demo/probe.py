"""The probe: a small CNN that reads a shapes-world picture and says what is drawn.

It reports the shape (held-out shapes included), the shape's colour, the background colour and
the fill, each with a confidence. Benchmarks use it to score what the demo model drew. The
trained weights ship with the package (`probe.safetensors` beside this module, fp16, with the
architecture and class names in the file's metadata); `scripts/train_probe.py` rebuilds them
and `bench/results/probe.json` holds its measured accuracy.

It was also trained to be unsure of pictures that show no shape (a blank background, blotches):
there its shape and colour confidences are low, so `ProbeResult.confident` is false.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from brushwork.core.errors import ConfigError, CorruptModelError, NotAModelError
from brushwork.demo.shapes import ALL_SHAPES, COLOR_NAMES, FILLS, ShapeSpec
from brushwork.formats.safeio import read_safetensors, write_safetensors

PROBE_FILE = Path(__file__).with_name("probe.safetensors")
HEADS: tuple[str, ...] = ("shape", "color", "background", "fill")
CONFIG_KEY = "brushwork.probe.config"


@dataclass(frozen=True)
class ProbeConfig:
    """Architecture of the probe and the class names of each head (stored in the file)."""

    widths: tuple[int, ...] = (16, 32, 32, 64, 64, 128)
    strides: tuple[int, ...] = (2, 2, 1, 2, 1, 2)
    input_size: int = 64
    classes: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "shape": ALL_SHAPES,
            "color": COLOR_NAMES,
            "background": COLOR_NAMES,
            "fill": FILLS,
        }
    )

    def to_json(self) -> str:
        return json.dumps(
            {
                "widths": list(self.widths),
                "strides": list(self.strides),
                "input_size": self.input_size,
                "classes": {head: list(names) for head, names in self.classes.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ProbeConfig:
        raw = json.loads(text)
        return cls(
            widths=tuple(int(w) for w in raw["widths"]),
            strides=tuple(int(s) for s in raw["strides"]),
            input_size=int(raw["input_size"]),
            classes={head: tuple(str(n) for n in names) for head, names in raw["classes"].items()},
        )


class ProbeNet(nn.Module):
    """Conv-BN-ReLU stages, global average pooling, one linear head per question."""

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 4
        for width, stride in zip(config.widths, config.strides, strict=True):
            layers += [
                nn.Conv2d(channels, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict(
            {head: nn.Linear(channels, len(names)) for head, names in config.classes.items()}
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head for images in [0, 1], shape [batch, 3, size, size]."""
        inputs = torch.cat([(images - 0.5) / 0.25, foreground(images) * 4 - 1], dim=1)
        features = self.features(inputs)
        return {head: layer(features) for head, layer in self.heads.items()}


def foreground(images: torch.Tensor) -> torch.Tensor:
    """How far each pixel is from the background colour (the median of the border pixels),
    in [0, 1], [batch, 1, h, w]: the silhouette of the shape whatever its colours are."""
    border = torch.cat(
        [images[:, :, 0, :], images[:, :, -1, :], images[:, :, :, 0], images[:, :, :, -1]], dim=2
    )
    background = border.median(dim=2).values[:, :, None, None]
    distance: torch.Tensor = (images - background).norm(dim=1, keepdim=True) / 3**0.5
    return distance.clamp(0, 1)


@dataclass(frozen=True)
class ProbeResult:
    """What the probe read in one picture; `confidences` is the top probability per head."""

    shape: str
    color: str
    background: str
    fill: str
    confidences: Mapping[str, float]
    probabilities: Mapping[str, Mapping[str, float]]

    def confident(self, threshold: float = 0.8) -> bool:
        """Whether the shape and colour answers are both at least `threshold` sure."""
        return min(self.confidences["shape"], self.confidences["color"]) >= threshold

    def matches(self, spec: ShapeSpec) -> bool:
        """Whether every answer agrees with what `spec` says was drawn."""
        return (self.shape, self.color, self.background, self.fill) == (
            spec.shape,
            spec.color,
            spec.background,
            spec.fill,
        )


def images_to_tensor(images: Sequence[Image.Image], size: int = 64) -> torch.Tensor:
    """RGB pictures (any size; resized square with LANCZOS) as floats in [0, 1], [n, 3, s, s]."""
    batch = torch.empty(len(images), 3, size, size, dtype=torch.uint8)
    for index, image in enumerate(images):
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        batch[index] = pixels.view(size, size, 3).permute(2, 0, 1)
    return batch.float() / 255.0


class Probe:
    """A trained probe on the CPU in eval mode. `Probe.load()` reads the shipped weights."""

    def __init__(self, net: ProbeNet, config: ProbeConfig) -> None:
        self.net = net.eval()
        self.config = config

    @classmethod
    def load(cls, path: Path | str | None = None) -> Probe:
        """Read a probe file (default: the one shipped in the package)."""
        path = PROBE_FILE if path is None else Path(path)
        if path == PROBE_FILE and not path.is_file():
            raise ConfigError(
                f"the shipped probe weights are missing ({path})",
                hint="rebuild them with `python scripts/train_probe.py`",
            )
        model_file = read_safetensors(path)
        if CONFIG_KEY not in model_file.metadata:
            raise NotAModelError(path, "is not a brushwork probe (no probe config in its metadata)")
        try:
            config = ProbeConfig.from_json(model_file.metadata[CONFIG_KEY])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptModelError(path, f"has an unreadable probe config: {exc}") from exc
        net = ProbeNet(config)
        tensors = {name: tensor.float() for name, tensor in model_file.tensors.items()}
        try:
            result = net.load_state_dict(tensors, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise CorruptModelError(path, f"weights do not fit the probe: {exc}") from exc
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise CorruptModelError(
                path,
                f"weights do not fit the probe (missing {missing}, extra {result.unexpected_keys})",
            )
        return cls(net, config)

    def save(self, path: Path | str, *, metadata: Mapping[str, Any] | None = None) -> None:
        """Write the weights in fp16 with the config (and `metadata`, as JSON) in the header."""
        tensors = {
            name: tensor.detach().to(torch.float16).contiguous()
            for name, tensor in self.net.state_dict().items()
            if tensor.is_floating_point()
        }
        header = {key: json.dumps(value) for key, value in (metadata or {}).items()}
        header[CONFIG_KEY] = self.config.to_json()
        write_safetensors(path, tensors, header)

    @torch.inference_mode()
    def predict_tensor(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class probabilities per head for a float batch in [0, 1]."""
        self.net.eval()
        return {head: logits.softmax(dim=1) for head, logits in self.net(batch).items()}

    def predict(self, images: Sequence[Image.Image], *, batch_size: int = 256) -> list[ProbeResult]:
        """Read each picture: shape, colour, background and fill, with confidences."""
        results: list[ProbeResult] = []
        for start in range(0, len(images), batch_size):
            chunk = images_to_tensor(images[start : start + batch_size], self.config.input_size)
            results += self._results(self.predict_tensor(chunk))
        return results

    def _results(self, probabilities: dict[str, torch.Tensor]) -> list[ProbeResult]:
        count = next(iter(probabilities.values())).shape[0]
        results = []
        for row in range(count):
            table = {
                head: dict(zip(self.config.classes[head], probs[row].tolist(), strict=True))
                for head, probs in probabilities.items()
            }
            best = {head: max(scores, key=scores.__getitem__) for head, scores in table.items()}
            results.append(
                ProbeResult(
                    shape=best["shape"],
                    color=best["color"],
                    background=best["background"],
                    fill=best["fill"],
                    confidences={head: table[head][best[head]] for head in table},
                    probabilities=table,
                )
            )
        return results
