"""Training and measuring the probe on fresh generator pictures (used by scripts/train_probe.py).

The training pictures are degraded the way a small diffusion model's output is (blur, lost
resolution, colour drift, blotchy backgrounds, noise), and a few pictures with no shape at all
(plain backgrounds, colour blotches) teach the probe to be unsure there: their shape, colour and
fill targets are uniform. Accuracy is measured on pictures from a seed training never used,
both as drawn and degraded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from brushwork.demo.probe import HEADS, Probe, ProbeConfig, ProbeNet
from brushwork.demo.shapes import (
    ALL_SHAPES,
    COLOR_NAMES,
    COLORS,
    FILLS,
    SIZES,
    ShapeSpec,
    render,
    sample_specs,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeTraining:
    """Settings of one probe training run."""

    seed: int = 0
    train_images: int = 16000
    steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 4e-3
    outliers_per_batch: int = 8
    image_size: int = 64


@dataclass(frozen=True)
class Evaluation:
    """Accuracy of a probe on `count` pictures: per head, and per head within each shape."""

    count: int
    per_head: dict[str, float]
    per_shape: dict[str, dict[str, float]]
    all_heads: float


def render_batch(specs: Sequence[ShapeSpec], size: int = 64) -> torch.Tensor:
    """The pictures of `specs` as uint8 [n, 3, size, size]."""
    batch = torch.empty(len(specs), 3, size, size, dtype=torch.uint8)
    for index, spec in enumerate(specs):
        pixels = torch.frombuffer(bytearray(render(spec, size).tobytes()), dtype=torch.uint8)
        batch[index] = pixels.view(size, size, 3).permute(2, 0, 1)
    return batch


def labels(specs: Sequence[ShapeSpec], config: ProbeConfig) -> dict[str, torch.Tensor]:
    """Class index per head for each spec."""
    values = {
        "shape": [s.shape for s in specs],
        "color": [s.color for s in specs],
        "background": [s.background for s in specs],
        "fill": [s.fill for s in specs],
    }
    return {
        head: torch.tensor([config.classes[head].index(v) for v in values[head]]) for head in HEADS
    }


def all_kinds_specs(seed: int, count: int) -> list[ShapeSpec]:
    """Every shape, colour, background, size and fill: what the probe must read."""
    return sample_specs(random.Random(seed), ALL_SHAPES, count, sizes=SIZES, fills=FILLS)


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Imperfections of a picture drawn by a small diffusion model through a VAE: mirror,
    blur, lost resolution, colour drift, blotchy background, pixel noise. Floats in [0, 1]."""
    count, _, size, _ = images.shape

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, *shape, generator=generator)

    def sometimes(share: float) -> torch.Tensor:
        return (torch.rand(count, 1, 1, 1, generator=generator) < share).float()

    mirrored = torch.rand(count, generator=generator) < 0.5
    images = torch.where(mirrored.view(-1, 1, 1, 1), images.flip(-1), images)
    low = int(torch.randint(size // 3, size - size // 8, (1,), generator=generator))
    shrunk = F.interpolate(images, size=low, mode="bilinear", antialias=True)
    soft = F.interpolate(shrunk, size=size, mode="bilinear")
    images = torch.lerp(images, soft, uniform(0, 1, 1, 1, 1) * sometimes(0.7))
    images = images * uniform(0.9, 1.1, 3, 1, 1) + uniform(-0.05, 0.05, 3, 1, 1)
    blotches = torch.randn(count, 3, 4, 4, generator=generator)
    blotches = F.interpolate(blotches, size=size, mode="bilinear") * uniform(0, 0.04, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator) * uniform(0, 0.04, 1, 1, 1)
    return (images + blotches + noise).clamp(0, 1)


def shapeless_batch(
    count: int, size: int, generator: torch.Generator, config: ProbeConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pictures without a shape: plain backgrounds (half) and colour blotches (half).

    Returns the images and their background class (-1 where there is no single background).
    """
    palette = torch.tensor([COLORS[name] for name in COLOR_NAMES], dtype=torch.float32) / 255
    picks = torch.randint(len(COLOR_NAMES), (count,), generator=generator)
    plain = palette[picks].view(count, 3, 1, 1).expand(count, 3, size, size)
    cells = torch.rand(count, 3, 3, 3, generator=generator)
    blotchy = F.interpolate(cells, size=size, mode="bicubic").clamp(0, 1)
    is_plain = torch.arange(count) % 2 == 0
    images = torch.where(is_plain.view(-1, 1, 1, 1), plain, blotchy)
    background_names = config.classes["background"]
    backgrounds = torch.tensor([background_names.index(COLOR_NAMES[i]) for i in picks.tolist()])
    return images, torch.where(is_plain, backgrounds, -1)


def _loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross entropy per head; where the target is -1 (no shape, no single background) the
    target is uniform over the classes, which teaches the probe to be unsure there."""
    total = torch.zeros(())
    for head in HEADS:
        log_probs = logits[head].log_softmax(dim=1)
        target = targets[head]
        known = target >= 0
        per_row = torch.where(
            known,
            -log_probs.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1),
            -log_probs.mean(dim=1),
        )
        total = total + per_row.mean()
    return total


def train_probe(
    settings: ProbeTraining, *, progress: Callable[[int, float], None] | None = None
) -> Probe:
    """Train a probe from scratch on freshly drawn pictures (seeded; CPU)."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    config = ProbeConfig(input_size=settings.image_size)
    started = time.perf_counter()
    specs = all_kinds_specs(settings.seed, settings.train_images)
    pool = render_batch(specs, settings.image_size)
    targets = labels(specs, config)
    logger.info("drew %d pictures in %.1f s", len(specs), time.perf_counter() - started)
    net = ProbeNet(config).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.steps, pct_start=0.15
    )
    net.train()
    for step in range(settings.steps):
        images, batch_targets = _training_batch(settings, pool, targets, generator, config)
        loss = _loss(net(images.contiguous(memory_format=torch.channels_last)), batch_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    return Probe(net.to(memory_format=torch.contiguous_format).eval(), config)


def _training_batch(
    settings: ProbeTraining,
    pool: torch.Tensor,
    targets: dict[str, torch.Tensor],
    generator: torch.Generator,
    config: ProbeConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    real = settings.batch_size - settings.outliers_per_batch
    picks = torch.randint(pool.shape[0], (real,), generator=generator)
    extra, backgrounds = shapeless_batch(
        settings.outliers_per_batch, settings.image_size, generator, config
    )
    images = degrade(torch.cat([pool[picks].float() / 255, extra]), generator)
    unknown = torch.full((settings.outliers_per_batch,), -1)
    batch_targets = {
        head: torch.cat([targets[head][picks], backgrounds if head == "background" else unknown])
        for head in HEADS
    }
    return images, batch_targets


def evaluate(
    probe: Probe,
    specs: Sequence[ShapeSpec],
    images: torch.Tensor,
    *,
    batch_size: int = 500,
) -> Evaluation:
    """Accuracy of `probe` on `images` (floats in [0, 1]) drawn from `specs`."""
    expected = labels(specs, probe.config)
    predicted: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
    for start in range(0, len(specs), batch_size):
        probabilities = probe.predict_tensor(images[start : start + batch_size])
        for head in HEADS:
            predicted[head].append(probabilities[head].argmax(dim=1))
    correct = {head: torch.cat(predicted[head]) == expected[head] for head in HEADS}
    shapes = [spec.shape for spec in specs]
    per_shape = {}
    for shape in dict.fromkeys(shapes):
        rows = torch.tensor([s == shape for s in shapes])
        per_shape[shape] = {head: float(correct[head][rows].float().mean()) for head in HEADS}
        per_shape[shape]["count"] = float(rows.sum())
    every = torch.stack([correct[head] for head in HEADS]).all(dim=0)
    return Evaluation(
        count=len(specs),
        per_head={head: float(correct[head].float().mean()) for head in HEADS},
        per_shape=per_shape,
        all_heads=float(every.float().mean()),
    )
