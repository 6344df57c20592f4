"""Quality in the shapes world, read by the probe from generated pictures.

* **Adherence**: the share of pictures whose probed shape and colour are the ones the prompt asks
  for (the background too, reported separately), over a fixed prompt set and seeds.
* **Adoption**: after teaching a held-out shape under a trigger word, the share of trigger-prompt
  pictures that the probe reads as that shape.
* **Preservation**: adherence on the base prompts after the teaching (with the new network in
  place), to compare with the base model's.

The prompt set is fixed (every base shape in every colour, each on a background chosen by a fixed
rule), so figures from different runs compare. Everything is drawn with A1111's defaults for the
sampler (DPM++ 2M, 20 steps, CFG 7) at the model's 64 px unless told otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from brushwork.demo.probe import Probe, ProbeResult
from brushwork.demo.shapes import BASE_SHAPES, COLOR_NAMES, ShapeSpec, caption
from brushwork.generation import GenerationRequest

DrawFunction = Callable[[GenerationRequest], list[Image.Image]]


@dataclass(frozen=True)
class DrawSettings:
    """How the evaluation pictures are drawn (A1111's defaults)."""

    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    cfg_scale: float = 7.0
    size: int = 64
    negative_prompt: str = ""
    prompt_suffix: str = ""  # e.g. `<hypernet:name:1>`, added to every prompt

    def request(self, prompt: str, seed: int, **extra: Any) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt + self.prompt_suffix,
            negative_prompt=self.negative_prompt,
            width=self.size,
            height=self.size,
            steps=self.steps,
            sampler_name=self.sampler_name,
            scheduler=self.scheduler,
            cfg_scale=self.cfg_scale,
            seed=seed,
            **extra,
        )


def base_prompt_specs(
    shapes: Sequence[str] = BASE_SHAPES, colors: Sequence[str] = COLOR_NAMES
) -> list[ShapeSpec]:
    """Every shape in every colour; the background is the colour three places on in the list
    (far from the shape's colour in hue or brightness), the same in every run."""
    specs = []
    for shape in shapes:
        for color in colors:
            background = COLOR_NAMES[(COLOR_NAMES.index(color) + 3) % len(COLOR_NAMES)]
            specs.append(ShapeSpec(shape, color, background))
    return specs


@dataclass(frozen=True)
class Judged:
    spec: ShapeSpec
    seed: int
    prompt: str
    result: ProbeResult

    @property
    def shape_ok(self) -> bool:
        return self.result.shape == self.spec.shape

    @property
    def color_ok(self) -> bool:
        return self.result.color == self.spec.color

    @property
    def background_ok(self) -> bool:
        return self.result.background == self.spec.background


@dataclass(frozen=True)
class AdherenceReport:
    """Shares in [0, 1] over `count` pictures."""

    count: int
    shape_and_color: float
    shape: float
    color: float
    background: float
    per_shape: dict[str, float] = field(default_factory=dict)
    per_color: dict[str, float] = field(default_factory=dict)
    probed_shapes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.count,
            "adherence_shape_and_color": round(self.shape_and_color, 4),
            "shape": round(self.shape, 4),
            "color": round(self.color, 4),
            "background": round(self.background, 4),
            "per_shape": {k: round(v, 4) for k, v in self.per_shape.items()},
            "per_color": {k: round(v, 4) for k, v in self.per_color.items()},
            "probed_shapes": dict(self.probed_shapes),
        }


def _share(items: Sequence[Judged], test: Callable[[Judged], bool]) -> float:
    return sum(1 for item in items if test(item)) / len(items) if items else 0.0


def judge(
    draw: DrawFunction,
    probe: Probe,
    specs: Sequence[ShapeSpec],
    seeds: Sequence[int],
    settings: DrawSettings,
    *,
    noun: str | None = None,
    request_extra: dict[str, Any] | None = None,
) -> list[Judged]:
    """Draw every spec's caption (with `noun` in place of the shape's name) at every seed, and
    read each picture with the probe."""
    jobs = [(spec, seed, caption(spec, noun=noun)) for spec in specs for seed in seeds]
    pictures = []
    for _spec, seed, prompt in jobs:
        pictures += draw(settings.request(prompt, seed, **(request_extra or {})))
    results = probe.predict(pictures)
    return [
        Judged(spec, seed, prompt, result)
        for (spec, seed, prompt), result in zip(jobs, results, strict=True)
    ]


def adherence_report(judged: Sequence[Judged]) -> AdherenceReport:
    shapes = sorted({j.spec.shape for j in judged})
    colors = sorted({j.spec.color for j in judged})
    return AdherenceReport(
        count=len(judged),
        shape_and_color=_share(judged, lambda j: j.shape_ok and j.color_ok),
        shape=_share(judged, lambda j: j.shape_ok),
        color=_share(judged, lambda j: j.color_ok),
        background=_share(judged, lambda j: j.background_ok),
        per_shape={
            s: _share([j for j in judged if j.spec.shape == s], lambda j: j.shape_ok and j.color_ok)
            for s in shapes
        },
        per_color={
            c: _share([j for j in judged if j.spec.color == c], lambda j: j.color_ok)
            for c in colors
        },
        probed_shapes=dict(Counter(j.result.shape for j in judged)),
    )


def adherence(
    draw: DrawFunction,
    probe: Probe,
    seeds: Sequence[int],
    settings: DrawSettings | None = None,
    *,
    specs: Sequence[ShapeSpec] | None = None,
    request_extra: dict[str, Any] | None = None,
) -> AdherenceReport:
    """Prompt adherence over the base prompt set (or `specs`) at `seeds`."""
    settings = settings or DrawSettings()
    judged = judge(
        draw, probe, specs or base_prompt_specs(), seeds, settings, request_extra=request_extra
    )
    return adherence_report(judged)


@dataclass(frozen=True)
class AdoptionReport:
    shape: str
    trigger: str
    count: int
    adoption: float  # share probed as `shape`
    probed_shapes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "trigger": self.trigger,
            "images": self.count,
            "adoption": round(self.adoption, 4),
            "probed_shapes": dict(self.probed_shapes),
        }


def adoption(
    draw: DrawFunction,
    probe: Probe,
    shape: str,
    trigger: str,
    seeds: Sequence[int],
    settings: DrawSettings | None = None,
    *,
    colors: Sequence[str] = ("red", "blue", "yellow", "green"),
    request_extra: dict[str, Any] | None = None,
) -> AdoptionReport:
    """How often prompts that say `trigger` where a shape name would be draw `shape`."""
    settings = settings or DrawSettings()
    specs = [replace(spec, shape=shape) for spec in base_prompt_specs(("circle",), colors)]
    judged = judge(draw, probe, specs, seeds, settings, noun=trigger, request_extra=request_extra)
    probed = Counter(j.result.shape for j in judged)
    return AdoptionReport(
        shape, trigger, len(judged), _share(judged, lambda j: j.shape_ok), dict(probed)
    )
