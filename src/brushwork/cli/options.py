"""Options and helpers the generating commands share (`generate`, `img2img`, `grid`).

Option types (typer ``Annotated`` aliases) with A1111's defaults in their help, and the
helpers that turn their values into request fields and a checkpoint / VAE choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings

if TYPE_CHECKING:
    from brushwork.library.catalog import Library

RootOption = Annotated[
    list[Path] | None,
    typer.Option("--root", help="Library root (A1111 / ComfyUI install or models folder)."),
]
NegativeOption = Annotated[str | None, typer.Option("--negative", "-n", help="Negative prompt.")]
ModelOption = Annotated[
    str | None,
    typer.Option(help="Checkpoint: a library name, hash or path. Default: the first one."),
]
VaeOption = Annotated[
    str | None, typer.Option(help="VAE: auto (default), none (baked), a library name or a path.")
]
SamplerOption = Annotated[str | None, typer.Option(help="Sampler (A1111 name). [DPM++ 2M]")]
SchedulerOption = Annotated[str | None, typer.Option(help="Schedule type. [Automatic]")]
StepsOption = Annotated[int | None, typer.Option(help="Sampling steps. [20]")]
CfgOption = Annotated[float | None, typer.Option("--cfg", help="CFG scale. [7]")]
SeedOption = Annotated[int | None, typer.Option(help="Seed; -1 for a random one. [-1]")]
SizeOption = Annotated[
    str | None,
    typer.Option(
        help="Image size WxH. [generate: the model's own, 512x512 for SD 1.x; else 512x512]"
    ),
]
BatchSizeOption = Annotated[int | None, typer.Option(help="Images per batch. [1]")]
BatchCountOption = Annotated[int | None, typer.Option(help="Batches, one after another. [1]")]
ClipSkipOption = Annotated[int | None, typer.Option(help="Clip skip (SD1). [1]")]
PrecisionOption = Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16.")]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")]
LoraOption = Annotated[
    list[str] | None,
    typer.Option("--lora", help="A LoRA outside the prompt: NAME[:WEIGHT[:UNET_WEIGHT]]."),
]
RngOption = Annotated[str | None, typer.Option(help="Noise source: cpu or nv. [cpu]")]
OutOption = Annotated[Path, typer.Option(help="Output folder (A1111's outputs layout).")]
GridOption = Annotated[bool, typer.Option("--grid", help="Also save a grid of the images.")]
CompileOption = Annotated[
    bool,
    typer.Option("--compile", help="Compile the UNet (torch.compile; CUDA graphs on a GPU)."),
]


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``512x768`` -> (512, 768)."""
    if text is None:
        return None
    width, sep, height = text.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ConfigError(f"size {text!r} is not WIDTHxHEIGHT", hint="for example 512x768")
    return int(width), int(height)


def parse_lora(text: str) -> Any:
    """``name`` / ``name:te`` / ``name:te:unet`` -> a LoraChoice."""
    from brushwork.generation import LoraChoice

    parts = text.split(":")
    try:
        te = float(parts[1]) if len(parts) > 1 else 1.0
        unet = float(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise ConfigError(f"--lora {text!r}: the weights are not numbers") from None
    return LoraChoice(parts[0], te, unet)


def request_values(**given: Any) -> dict[str, Any]:
    """Request fields from CLI values that were given (None: keep the default / infotext)."""
    values = {key: value for key, value in given.items() if value is not None}
    size = parse_size(values.pop("size", None))
    if size is not None:
        values["width"], values["height"] = size
    resize = parse_size(values.pop("hr_resize", None))
    if resize is not None:
        values["hr_resize_x"], values["hr_resize_y"] = resize
    loras = values.pop("loras", None)
    if loras:
        values["loras"] = tuple(parse_lora(text) for text in loras)
    if any(key.startswith("hr_") for key in values):
        values.setdefault("enable_hr", True)
    return values


# -- settings and VAE choice -----------------------------------------------------------------


def cli_settings(ctx: typer.Context) -> Settings:
    """The Settings the entry point put in the context (default Settings in tests)."""
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def vae_choice(library: Library, vae: str | None) -> str | Path:
    """``--vae``: auto / none / baked as they are, a file path, else a library VAE's path."""
    if vae is None or vae.lower() in ("auto", "none", "baked"):
        return vae or "auto"
    if Path(vae).expanduser().is_file():
        return Path(vae).expanduser()
    return library.find(vae, kind=ModelKind.VAE).path
