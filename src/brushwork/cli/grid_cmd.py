"""`brushwork grid`: A1111's X/Y/Z plot, and the LoRA epoch x strength grid in one command.

    brushwork grid "a cat" --x-type steps --x-values "10,20,30" --y-type cfg --y-values "5-9 (+2)"
    brushwork grid "a red cube" --x-type "Prompt S/R" --x-values "red, blue, green" --seed 1
    brushwork grid lora-epochs output/mystyle --prompt "a cat" --strengths 0.4,0.6,0.8,1.0

`brushwork grid PROMPT ...` is `brushwork grid xyz PROMPT ...`. Axis types (`--x-type` and the
others): seed, var-seed, var-strength, steps, cfg, prompt-sr, sampler, scheduler, checkpoint,
vae, lora, lora-strength, clip-skip, denoising, size (A1111's labels work too). Values: a
comma-separated list (CSV quoting for commas inside a value), ranges `1-5`, `1-10 (+2)`,
`1-10 [4]`. The grid is saved as `<out>/txt2img-grids/<date>/xyz_grid-NNNN.png` with the
infotext of every cell recorded in it (and in `xyz_grid-NNNN.json`); `--keep-cells` also
saves every cell as a normal image.

`lora-epochs` takes a training run's output folder (or a glob, or one of its files): rows are
its epoch files in order, then the final file; columns are the strengths; one seed throughout.

Exit codes: 0 done; 1 a brushwork error; 2 a model file that cannot be used; 130 stopped with
Ctrl-C (the cells drawn so far are still saved as a grid).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from brushwork.cli.errors import exit_on_error
from brushwork.cli.generate_cmd import (
    EXIT_INTERRUPTED,
    choose_checkpoint,
    ctrl_c_stops,
    progress_bar,
)
from brushwork.cli.options import (
    BatchCountOption,
    BatchSizeOption,
    CfgOption,
    ClipSkipOption,
    CompileOption,
    DeviceOption,
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
    from brushwork.generation.xyz import XYZPlan, XYZResult
    from brushwork.generation.xyz_axes import Axis

DEFAULT_COMMAND = "xyz"
DEFAULT_STRENGTHS = "0.4,0.6,0.8,1.0"


class GridGroup(TyperGroup):
    """`brushwork grid PROMPT ...` runs `grid xyz PROMPT ...`: a first word that names no
    subcommand (a prompt, or an option) goes to the default command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored click
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


grid_app = typer.Typer(
    cls=GridGroup,
    help="Comparison grids (A1111's X/Y/Z plot): `brushwork grid PROMPT --x-type ... "
    "--x-values ...`, or `brushwork grid lora-epochs RUN` for a LoRA's epochs x strengths.",
    no_args_is_help=True,
)

TypeOption = Annotated[str | None, typer.Option(help="Axis type (steps, cfg, seed, ...).")]
ValuesOption = Annotated[
    str | None, typer.Option(help='Axis values: "10,20", "1-5", "1-10 (+2)", "1-10 [4]".')
]
MarginOption = Annotated[int, typer.Option(help="Pixels between cells. [0]")]
LegendOption = Annotated[bool, typer.Option("--legend/--no-legend", help="Draw the labels. [on]")]
KeepCellsOption = Annotated[
    bool, typer.Option("--keep-cells", help="Also save every cell as an image.")
]


@dataclass(frozen=True)
class GridOptions:
    """What the grid commands share besides the request fields."""

    model: str | None
    vae: str | None
    precision: str | None
    device: str | None
    roots: tuple[Path, ...]
    out: Path
    margin: int
    legend: bool
    keep_cells: bool
    compile: bool


def _axis(which: str, type_name: str | None, values: str | None) -> Axis | None:
    from brushwork.generation.xyz_axes import parse_axis

    if type_name is None and values is None:
        return None
    if type_name is None or values is None:
        given, missing = ("type", "values") if values is None else ("values", "type")
        raise ConfigError(
            f"the {which} axis has {given} but no {missing}",
            hint=f"give both --{which.lower()}-type and --{which.lower()}-values",
        )
    return parse_axis(type_name, values)


def _run_grid(
    settings: Settings,
    options: GridOptions,
    values: dict[str, Any],
    axes: tuple[Axis | None, Axis | None, Axis | None],
) -> None:
    from brushwork.generation import GenerationRequest
    from brushwork.generation.xyz import plan_xyz
    from brushwork.library.catalog import Library

    library = Library.open(settings, options.roots)
    by_axis = options.model is None and any(
        a is not None and a.type.key == "checkpoint" for a in axes
    )
    checkpoint = None if by_axis else choose_checkpoint(library, options.model)
    vae_folders = sorted({e.path.parent for e in library.scan().entries if e.kind is ModelKind.VAE})
    plan = plan_xyz(
        GenerationRequest(**values),
        x=axes[0],
        y=axes[1],
        z=axes[2],
        checkpoint=checkpoint,
        vae=vae_choice(library, options.vae),
        library=library,
        vae_folders=vae_folders,
        margin=options.margin,
        draw_legend=options.legend,
    )
    _draw(plan, options, settings, vae_folders)


def _draw(plan: XYZPlan, options: GridOptions, settings: Settings, vae_folders: list[Path]) -> None:
    from brushwork.generation import CompileOptions, GeneratedImage, GenerationProgress
    from brushwork.generation.outputs import images_folder, save_image
    from brushwork.generation.xyz import XYZCell, XYZProgress, run_xyz
    from brushwork.loading import LoadedModel, load_model
    from brushwork.loading.vae import VaeSpec

    console = Console(stderr=True, highlight=False)
    columns, rows, depth = plan.shape
    console.print(f"{len(plan.cells)} cells ({columns} x {rows} x {depth})")
    cells_folder = images_folder(options.out, plan.cells[0].request.mode)

    def load(path: Path, vae: VaeSpec) -> LoadedModel:
        console.print(f"loading {path.name}")
        device = options.device or settings.device
        precision = options.precision or settings.precision
        return load_model(
            path, device=device, precision=precision, vae=vae, vae_folders=vae_folders
        )

    def keep(cell: XYZCell, item: GeneratedImage) -> None:
        if options.keep_cells:
            save_image(item.image, cells_folder, seed=item.seed, infotext=item.infotext)

    cancel = threading.Event()
    compile_options = CompileOptions(options.compile or settings.compile_unet)
    try:
        with progress_bar(console) as bar, ctrl_c_stops(cancel, console):
            cells_task = bar.add_task("cells", total=len(plan.cells))
            steps_task = bar.add_task("sampling", total=None)

            def on_cell(event: XYZProgress) -> None:
                bar.update(cells_task, completed=event.done)

            def on_step(event: GenerationProgress) -> None:
                bar.update(steps_task, total=event.total, completed=event.done)

            result = run_xyz(
                plan, load, compile_options=compile_options, progress=on_cell,
                step_progress=on_step, cancel=cancel, on_image=keep,
            )  # fmt: skip
    except KeyboardInterrupt:
        console.print("stopped; no grid saved")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _save(result, options, console)


def _save(result: XYZResult, options: GridOptions, console: Console) -> None:
    from brushwork.generation.xyz_output import save_xyz

    drawn = sum(cell is not None for cell in result.cells)
    if drawn:
        for path in save_xyz(result, options.out):
            console.print(f"saved {path}")
    if result.interrupted:
        console.print(f"stopped; {drawn} of {len(result.cells)} cells drawn")
        raise typer.Exit(EXIT_INTERRUPTED)


def _options(**given: Any) -> GridOptions:
    return GridOptions(
        model=given["model"],
        vae=given["vae"],
        precision=given["precision"],
        device=given["device"],
        roots=tuple(given["root"] or ()),
        out=given["out"],
        margin=given["margin"],
        legend=given["legend"],
        keep_cells=given["keep_cells"],
        compile=given["compile_unet"],
    )


def _init_image(path: Path | None, values: dict[str, Any]) -> None:
    """An init image makes the grid img2img (its size, unless --size says otherwise)."""
    if path is None:
        return
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the image: {error}") from None
    values["init_images"] = (image,)
    if "width" not in values:
        values["width"], values["height"] = (side // 8 * 8 for side in image.size)


@grid_app.command(DEFAULT_COMMAND)
def xyz(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="The prompt (A1111 syntax).")],
    x_type: TypeOption = None,
    x_values: ValuesOption = None,
    y_type: TypeOption = None,
    y_values: ValuesOption = None,
    z_type: TypeOption = None,
    z_values: ValuesOption = None,
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
    init_image: Annotated[
        Path | None, typer.Option(help="Draw from this image (img2img; Denoising axis).")
    ] = None,
    denoise: Annotated[float | None, typer.Option(help="img2img denoising strength.")] = None,
    margin: MarginOption = 0,
    legend: LegendOption = True,
    keep_cells: KeepCellsOption = False,
    root: RootOption = None,
    out: OutOption = Path("outputs"),
    compile_unet: CompileOption = False,
) -> None:
    """Draw a labelled grid varying up to three settings (A1111's X/Y/Z plot)."""
    request_fields = {
        "prompt": prompt, "negative_prompt": negative, "sampler_name": sampler,
        "scheduler": scheduler, "steps": steps, "cfg_scale": cfg, "seed": seed, "size": size,
        "batch_size": batch_size, "n_iter": batch_count, "clip_skip": clip_skip, "loras": lora,
        "rng": rng, "denoising_strength": denoise,
    }  # fmt: skip
    with exit_on_error():
        axes = (
            _axis("X", x_type, x_values),
            _axis("Y", y_type, y_values),
            _axis("Z", z_type, z_values),
        )
        if all(axis is None for axis in axes):
            raise ConfigError("no axis given", hint="give at least --x-type TYPE --x-values VALUES")
        values = request_values(**request_fields)
        _init_image(init_image, values)
        options = _options(
            model=model, vae=vae, precision=precision, device=device, root=root, out=out,
            margin=margin, legend=legend, keep_cells=keep_cells, compile_unet=compile_unet,
        )  # fmt: skip
        _run_grid(cli_settings(ctx), options, values, axes)


@grid_app.command("lora-epochs")
def lora_epochs(
    ctx: typer.Context,
    run: Annotated[
        str, typer.Argument(help="The run's output folder, a glob, or one of its files.")
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The prompt (A1111 syntax).")],
    strengths: Annotated[
        str, typer.Option(help="LoRA strengths (columns); ranges work: 0-1 [5].")
    ] = DEFAULT_STRENGTHS,
    name: Annotated[
        str | None, typer.Option(help="The run's name, when the folder holds several.")
    ] = None,
    z_type: TypeOption = None,
    z_values: ValuesOption = None,
    negative: NegativeOption = None,
    model: ModelOption = None,
    vae: VaeOption = None,
    sampler: SamplerOption = None,
    scheduler: SchedulerOption = None,
    steps: StepsOption = None,
    cfg: CfgOption = None,
    seed: SeedOption = None,
    size: SizeOption = None,
    clip_skip: ClipSkipOption = None,
    precision: PrecisionOption = None,
    device: DeviceOption = None,
    rng: RngOption = None,
    margin: MarginOption = 0,
    legend: LegendOption = True,
    keep_cells: KeepCellsOption = False,
    root: RootOption = None,
    out: OutOption = Path("outputs"),
    compile_unet: CompileOption = False,
) -> None:
    """Pick a trained LoRA's best epoch and strength: rows = epoch files, columns = strengths."""
    from brushwork.generation.xyz_axes import parse_axis
    from brushwork.generation.xyz_epochs import epoch_axis, find_epoch_files

    request_fields = {
        "prompt": prompt, "negative_prompt": negative, "sampler_name": sampler,
        "scheduler": scheduler, "steps": steps, "cfg_scale": cfg, "seed": seed, "size": size,
        "clip_skip": clip_skip, "rng": rng,
    }  # fmt: skip
    with exit_on_error():
        rows = epoch_axis(find_epoch_files(run, run=name))
        axes = (parse_axis("lora-strength", strengths), rows, _axis("Z", z_type, z_values))
        options = _options(
            model=model, vae=vae, precision=precision, device=device, root=root, out=out,
            margin=margin, legend=legend, keep_cells=keep_cells, compile_unet=compile_unet,
        )  # fmt: skip
        _run_grid(cli_settings(ctx), options, request_values(**request_fields), axes)
