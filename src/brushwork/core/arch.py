"""Per-architecture facts as data, and the config skeletons shipped in the package.

A skeleton is a diffusers-layout folder of JSON configs (no weights) for one standard
architecture: `sd1` (SD 1.x), `sd2` (SD 2.x, 512, epsilon), `sd2-v` (SD 2.x 768, v-prediction) and
`sdxl` (SDXL base 1.0). The CLIP BPE tokenizer files live beside them in `tokenizer/`. Nothing here
ever reaches a hub. `scripts/make_skeletons.py` rebuilds the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from brushwork.core.errors import BrushworkError
from brushwork.core.kinds import BaseFamily

SKELETON_NAMES = ("sd1", "sd2", "sd2-v", "sdxl")


@dataclass(frozen=True)
class FamilyFacts:
    """What is fixed for every model of one family, whatever its size."""

    family: BaseFamily
    skeleton: str
    context_dim: int  # width of the text conditioning the UNet cross-attends to
    text_encoders: tuple[str, ...]  # diffusers component names, in order
    vae_scaling_factor: float
    default_resolution: int
    kohya_base_model_version: str
    modelspec_architecture: str
    embedding_width: int  # width of one textual-inversion vector (SDXL: clip_l + clip_g)


FAMILIES: dict[BaseFamily, FamilyFacts] = {
    BaseFamily.SD1: FamilyFacts(
        BaseFamily.SD1,
        "sd1",
        768,
        ("text_encoder",),
        0.18215,
        512,
        "sd_v1",
        "stable-diffusion-v1",
        768,
    ),
    BaseFamily.SD2: FamilyFacts(
        BaseFamily.SD2,
        "sd2",
        1024,
        ("text_encoder",),
        0.18215,
        512,
        "sd_v2",
        "stable-diffusion-v2-512",
        1024,
    ),
    BaseFamily.SDXL: FamilyFacts(
        BaseFamily.SDXL,
        "sdxl",
        2048,
        ("text_encoder", "text_encoder_2"),
        0.13025,
        1024,
        "sdxl_base_v1-0",
        "stable-diffusion-xl-v1-base",
        2048,
    ),
}


def family_facts(family: BaseFamily | str) -> FamilyFacts:
    return FAMILIES[BaseFamily(family)]


def skeletons_root() -> Path:
    """The folder holding every shipped skeleton (inside the installed package)."""
    return Path(str(resources.files("brushwork.core").joinpath("skeletons")))


def tokenizer_dir() -> Path:
    """The shipped CLIP BPE tokenizer files (vocab.json + merges.txt, 49,408 entries)."""
    return skeletons_root() / "tokenizer"


def skeleton_dir(name: str) -> Path:
    if name not in SKELETON_NAMES:
        raise BrushworkError(
            f"unknown architecture skeleton {name!r}",
            hint=f"known skeletons: {', '.join(SKELETON_NAMES)}",
        )
    return skeletons_root() / name


def skeleton_config(name: str, component: str) -> dict[str, Any]:
    """The config of one component (`unet`, `vae`, `text_encoder`, `text_encoder_2`, `scheduler`)."""
    folder = skeleton_dir(name) / component
    path = folder / ("scheduler_config.json" if component == "scheduler" else "config.json")
    if not path.is_file():
        raise BrushworkError(f"skeleton {name!r} has no component {component!r}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
