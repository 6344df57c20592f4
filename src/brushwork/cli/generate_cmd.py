"""`brushwork generate PROMPT ...` and `brushwork img2img IMAGE PROMPT ...`: draw images.

Images are saved as A1111 saves them (`<out>/txt2img-images/YYYY-MM-DD/NNNNN-SEED.png`, the
infotext in the PNG's `parameters` chunk) as soon as each one is finished. Ctrl-C once stops
at the next sampler step, keeping the images already saved; twice stops at once.
`generate --from-image IMAGE` reads an image's infotext and draws it again (options given on
the command line win over the infotext's values).

Exit codes: 0 done; 1 a brushwork error (unknown model, bad option...); 2 a model file that
cannot be used; 130 stopped with Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from brushwork.cli.errors import exit_on_error
from brushwork.cli.options import (
    BatchCountOption,
    BatchSizeOption,
    CfgOption,
    ClipSkipOption,
    CompileOption,
    DeviceOption,
    GridOption,
    LoraOption,
    ModelOption,
    NegativeOption,
    OutOption,
    PrecisionOption,
    RngOption,
    RootOption,
    SamplerOption,
    SchedulerOption,
    SeedOption,
    SizeOption,
    StepsOption,
    VaeOption,
    cli_settings,
    request_values,
    vae_choice,
)
from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings

if TYPE_CHECKING:
    from brushwork.generation import GeneratedImage, GenerationProgress, GenerationRequest
    from brushwork.library.catalog import Library
    from brushwork.loading import LoadedModel

EXIT_INTERRUPTED = 130
NO_CHECKPOINT_HINT = (
    "put a .safetensors checkpoint in {folder}, or pass --model PATH; "
    "`brushwork dev tiny-model {folder}/tiny.safetensors` writes a random-weight one for "
    "trying the tools"
)
MASKED_CONTENT = {"fill": 0, "original": 1, "latent-noise": 2, "latent-nothing": 3}
RESIZE_MODES = {"just-resize": 0, "crop-and-resize": 1, "resize-and-fill": 2, "latent-upscale": 3}


class RateColumn(ProgressColumn):
    """Sampler steps per second, as A1111 reports it/s."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- it/s" if speed is None else f"{speed:.2f} it/s")


@dataclass(frozen=True)
class CommonOptions:
    """The options `generate` and `img2img` share, as the user gave them (None: not given)."""

    values: dict[str, Any]
    model: str | None
    vae: str | None
    precision: str | None
    device: str | None
    roots: tuple[Path, ...]
    out: Path
    grid: bool
    compile: bool


def choose_checkpoint(library: Library, name: str | None, recorded: Any = None) -> Path:
    """``--model`` (a path, or a library name/hash), else the model an infotext names when the
    library has it, else the library's first checkpoint (by path)."""
    from brushwork.library.errors import ModelNotFoundError

    if name is not None:
        if Path(name).expanduser().is_file():
            return Path(name).expanduser()
        return library.find(name, kind=ModelKind.CHECKPOINT).path
    scan = library.scan()
    for query in (getattr(recorded, "model_hash", None), getattr(recorded, "model_name", None)):
        if query:
            try:
                return library.find(query, kind=ModelKind.CHECKPOINT, scan=scan).path
            except ModelNotFoundError:
                continue
    # the user's own checkpoints first; the built-in demo model only when there is none
    checkpoints = sorted(
        (e for e in scan.entries if e.kind is ModelKind.CHECKPOINT),
        key=lambda e: (library.is_builtin(e), e.relative_path.casefold()),
    )
    if not checkpoints:
        folder = library.user_roots[0] / "models" / "Stable-diffusion"
        raise ConfigError(
            f"no checkpoint in the library ({', '.join(str(r) for r in library.user_roots)}) "
            "and the built-in demo model is missing from this installation",
            hint=NO_CHECKPOINT_HINT.format(folder=folder),
        )
    if recorded is not None and getattr(recorded, "model_name", None):
        typer.echo(
            f"warning: the image was drawn with {recorded.model_name} "
            f"[{recorded.model_hash}], which is not in the library; using "
            f"{checkpoints[0].name} (the image will differ)",
            err=True,
        )
    return checkpoints[0].path


def load_for(
    options: CommonOptions, settings: Settings, recorded: Any = None
) -> tuple[LoadedModel, Library]:
    from brushwork.library.catalog import Library
    from brushwork.loading import load_model

    library = Library.open(settings, options.roots)
    path = choose_checkpoint(library, options.model, recorded)
    vae_folders = sorted({e.path.parent for e in library.scan().entries if e.kind is ModelKind.VAE})
    model = load_model(
        path,
        device=options.device or settings.device,
        precision=options.precision or settings.precision,
        vae=vae_choice(library, options.vae),
        vae_folders=vae_folders,
    )
    return model, library


# -- running ----------------------------------------------------------------------------------


@contextmanager
def ctrl_c_stops(cancel: threading.Event, console: Console) -> Iterator[None]:
    """The first Ctrl-C sets `cancel` (the job stops at the next step); the second interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        console.print("stopping after this step (Ctrl-C again to stop now)...")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def progress_bar(console: Console) -> Progress:
    """Steps done of the whole job, it/s, elapsed time and ETA."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, transient=True)


def run_job(
    options: CommonOptions,
    *,
    request: GenerationRequest,
    model: LoadedModel,
    library: Library,
    known_hashes: dict[str, str] | None = None,
) -> None:
    """Generate with a progress bar, saving each image when it is finished."""
    from brushwork.generation import CompileOptions, Generator, image_grid
    from brushwork.generation.outputs import images_folder, save_grid, save_image

    console = Console(stderr=True, highlight=False)
    folder = images_folder(options.out, request.mode)
    saved: list[GeneratedImage] = []

    def keep(item: GeneratedImage) -> None:
        path = save_image(item.image, folder, seed=item.seed, infotext=item.infotext)
        saved.append(item)
        console.print(f"saved {path}")

    generator = Generator(model, library=library, compile_options=CompileOptions(options.compile))
    cancel = threading.Event()
    try:
        with progress_bar(console) as bar, ctrl_c_stops(cancel, console):
            task = bar.add_task("sampling", total=None)

            def advance(event: GenerationProgress) -> None:
                bar.update(task, total=event.total, completed=event.done, description=event.phase)

            result = generator.generate(
                request, known_hashes=known_hashes, progress=advance, cancel=cancel, on_image=keep
            )
    except KeyboardInterrupt:
        console.print(f"stopped; {len(saved)} images kept")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if options.grid and len(saved) > 1:
        grid_folder = images_folder(options.out, request.mode, grid=True)
        grid = image_grid([item.image for item in saved])
        console.print(f"saved {save_grid(grid, grid_folder, infotext=saved[0].infotext)}")
    timings = result.timings
    console.print(
        f"{len(saved)} images in {timings.total_s:.1f} s "
        f"({timings.it_per_s:.2f} it/s over {timings.sampling_steps} steps)"
    )
    if result.interrupted:
        console.print(f"stopped; {len(saved)} images kept")
        raise typer.Exit(EXIT_INTERRUPTED)


# -- commands ---------------------------------------------------------------------------------


def with_settings(options: CommonOptions, settings: Settings) -> CommonOptions:
    """Options as the flags gave them, with what Settings turns on (`compile_unet`)."""
    return replace(options, compile=options.compile or settings.compile_unet)


def _common(**values: Any) -> CommonOptions:
    return CommonOptions(
        values=request_values(**values.pop("request")),
        model=values["model"],
        vae=values["vae"],
        precision=values["precision"],
        device=values["device"],
        roots=tuple(values["root"] or ()),
        out=values["out"],
        grid=values["grid"],
        compile=values["compile"],
    )


def generate(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="The prompt (A1111 syntax).")] = None,
    negative: NegativeOption = None,
    model: ModelOption = None,
    vae: VaeOption = None,
    sampler: SamplerOption = None,
    scheduler: SchedulerOption = None,
    steps: StepsOption = None,
    cfg: CfgOption = None,
    seed: SeedOption = None,
    size: SizeOption = None,
    batch_size: BatchSizeOption = None,
    batch_count: BatchCountOption = None,
    clip_skip: ClipSkipOption = None,
    precision: PrecisionOption = None,
    device: DeviceOption = None,
    lora: LoraOption = None,
    rng: RngOption = None,
    hires_scale: Annotated[float | None, typer.Option(help="Hires fix: upscale by.")] = None,
    hires_size: Annotated[str | None, typer.Option(help="Hires fix: target WxH.")] = None,
    hires_steps: Annotated[int | None, typer.Option(help="Hires fix: second-pass steps.")] = None,
    hires_denoise: Annotated[float | None, typer.Option(help="Hires fix: denoise. [0.7]")] = None,
    hires_upscaler: Annotated[
        str | None, typer.Option(help="Hires fix: Latent (default), Lanczos, ...")
    ] = None,
    from_image: Annotated[
        Path | None, typer.Option(help="Draw again the image whose infotext this PNG holds.")
    ] = None,
    root: RootOption = None,
    out: OutOption = Path("outputs"),
    grid: GridOption = False,
    compile_unet: CompileOption = False,
) -> None:
    """Draw images from a prompt (txt2img), as A1111 would from the same settings."""
    request_fields = {
        "prompt": prompt, "negative_prompt": negative, "sampler_name": sampler,
        "scheduler": scheduler, "steps": steps, "cfg_scale": cfg, "seed": seed, "size": size,
        "batch_size": batch_size, "n_iter": batch_count, "clip_skip": clip_skip, "loras": lora,
        "rng": rng, "hr_scale": hires_scale, "hr_resize": hires_size,
        "hr_second_pass_steps": hires_steps, "hr_upscaler": hires_upscaler,
    }  # fmt: skip
    with exit_on_error():
        options = _common(
            request=request_fields, model=model, vae=vae, precision=precision, device=device,
            root=root, out=out, grid=grid, compile=compile_unet,
        )  # fmt: skip
        values = dict(options.values)
        if hires_denoise is not None:
            values.update(denoising_strength=hires_denoise, enable_hr=True)
        elif values.get("enable_hr"):
            values.setdefault("denoising_strength", 0.7)
        _generate(cli_settings(ctx), options, values, from_image)


def _generate(
    settings: Settings, options: CommonOptions, values: dict[str, Any], from_image: Path | None
) -> None:
    from brushwork.generation import GenerationRequest, request_from_infotext
    from brushwork.prompt import read_image_infotext

    recorded = None
    if from_image is not None:
        try:
            text = read_image_infotext(from_image.read_bytes())
        except (OSError, ValueError) as error:
            raise ConfigError(f"{from_image}: cannot read the image: {error}") from None
        if not text:
            raise ConfigError(f"{from_image} carries no generation parameters (infotext)")
        request, recorded = request_from_infotext(text, **values)
    elif "prompt" not in values:
        raise ConfigError("give a PROMPT, or --from-image IMAGE to draw an image again")
    else:
        request = GenerationRequest(**values)
    model, library = load_for(options, settings, recorded)
    if from_image is None and "width" not in values:  # no --size: the model's own size
        request = replace(request, width=model.native_size, height=model.native_size)
    known = dict(recorded.lora_hashes) if recorded is not None else None
    run_job(
        with_settings(options, settings),
        model=model,
        library=library,
        request=request,
        known_hashes=known,
    )


def img2img(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="The init image.")],
    prompt: Annotated[str, typer.Argument(help="The prompt (A1111 syntax).")],
    mask: Annotated[Path | None, typer.Option(help="Inpaint mask (white = paint).")] = None,
    denoise: Annotated[float | None, typer.Option(help="Denoising strength. [0.75]")] = None,
    resize_mode: Annotated[
        str | None, typer.Option(help=f"One of {', '.join(RESIZE_MODES)}. [just-resize]")
    ] = None,
    mask_blur: Annotated[int | None, typer.Option(help="Mask blur. [4]")] = None,
    masked_content: Annotated[
        str | None, typer.Option(help=f"One of {', '.join(MASKED_CONTENT)}. [original]")
    ] = None,
    only_masked: Annotated[
        bool, typer.Option("--only-masked", help="Inpaint area: only masked.")
    ] = False,
    padding: Annotated[int | None, typer.Option(help="Only masked padding. [32]")] = None,
    invert_mask: Annotated[bool, typer.Option("--invert-mask", help="Paint outside.")] = False,
    negative: NegativeOption = None,
    model: ModelOption = None,
    vae: VaeOption = None,
    sampler: SamplerOption = None,
    scheduler: SchedulerOption = None,
    steps: StepsOption = None,
    cfg: CfgOption = None,
    seed: SeedOption = None,
    size: Annotated[str | None, typer.Option(help="Size WxH. [the image's]")] = None,
    batch_size: BatchSizeOption = None,
    batch_count: BatchCountOption = None,
    clip_skip: ClipSkipOption = None,
    precision: PrecisionOption = None,
    device: DeviceOption = None,
    lora: LoraOption = None,
    rng: RngOption = None,
    root: RootOption = None,
    out: OutOption = Path("outputs"),
    grid: GridOption = False,
    compile_unet: CompileOption = False,
) -> None:
    """Draw from an init image (img2img), or inpaint it with --mask."""
    request_fields = {
        "prompt": prompt, "negative_prompt": negative, "sampler_name": sampler,
        "scheduler": scheduler, "steps": steps, "cfg_scale": cfg, "seed": seed, "size": size,
        "batch_size": batch_size, "n_iter": batch_count, "clip_skip": clip_skip, "loras": lora,
        "rng": rng, "denoising_strength": denoise, "inpaint_full_res_padding": padding,
        "mask_blur_x": mask_blur, "mask_blur_y": mask_blur,
    }  # fmt: skip
    with exit_on_error():
        options = _common(
            request=request_fields, model=model, vae=vae, precision=precision, device=device,
            root=root, out=out, grid=grid, compile=compile_unet,
        )  # fmt: skip
        values = dict(options.values)
        values.update(_img2img_images(image, mask, values))
        values.update(_choice("resize mode", resize_mode, RESIZE_MODES, "resize_mode"))
        values.update(_choice("masked content", masked_content, MASKED_CONTENT, "inpainting_fill"))
        values.update(inpaint_full_res=only_masked, inpainting_mask_invert=invert_mask)
        from brushwork.generation import GenerationRequest

        request = GenerationRequest(**values)
        settings = cli_settings(ctx)
        loaded, library = load_for(options, settings, None)
        run_job(with_settings(options, settings), model=loaded, library=library, request=request)


def _choice(what: str, value: str | None, choices: dict[str, int], field: str) -> dict[str, int]:
    if value is None:
        return {}
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")
    return {field: choices[value]}


def _img2img_images(image: Path, mask: Path | None, values: dict[str, Any]) -> dict[str, Any]:
    from PIL import Image

    def read(path: Path) -> Image.Image:
        try:
            with Image.open(path) as opened:
                opened.load()
                return opened.copy()
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path}: cannot read the image: {error}") from None

    init = read(image)
    images: dict[str, Any] = {"init_images": (init,)}
    if mask is not None:
        images["mask"] = read(mask)
    if "width" not in values:
        images["width"], images["height"] = (side // 8 * 8 for side in init.size)
    return images
