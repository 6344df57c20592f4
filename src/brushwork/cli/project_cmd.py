"""`brushwork project ...`: training projects (sd-webui-train-tools style), versions and previews.

    brushwork project new NAME --images DIR [--prepare-size 512x512 | --buckets] [--crop ...]
                          [--repeats 10] [--class-tokens TEXT] [--concept SHAPE --trigger WORD]
    brushwork project version NAME [--from VERSION] --config FILE.toml [--base M] [--set K=V]
    brushwork project train NAME VERSION [--force] [--resume]
    brushwork project preview NAME VERSION --prompt ... --weights 0.6,0.8,1.0 [--seeds 1,2]
    brushwork project list | show NAME [--json]
    brushwork project best NAME VERSION [--weights ...] [--seeds N] [--json]

A project is a folder (`<first library root>/projects/NAME`, or under `--projects-dir`) with
the prepared dataset (edit its tags with `brushwork dataset tags <project>/dataset ...`) and
one folder per version: options, checkpoints, logs, loss curve and preview grids
(`brushwork.projects.layout`).

Exit codes: 0 done; 1 a bad option, an unknown project or version, or a failed run; 2 a model
file that cannot be used; 130 a preview stopped with Ctrl-C.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from brushwork.cli.errors import exit_on_error
from brushwork.cli.options import (
    CfgOption,
    DeviceOption,
    NegativeOption,
    PrecisionOption,
    SamplerOption,
    StepsOption,
)
from brushwork.cli.train_common import (
    BaseOption,
    RootOption,
    SetOption,
    VerboseOption,
    configure_logging,
    console,
    parse_set_options,
    print_warnings,
    settings_of,
)
from brushwork.core.errors import ConfigError
from brushwork.datasets.prepare import CropMode, PrepareOptions, parse_size
from brushwork.projects.layout import projects_home
from brushwork.projects.project import (
    NewProject,
    Project,
    create_project,
    list_projects,
    open_project,
)
from brushwork.projects.records import Concept

if TYPE_CHECKING:
    from brushwork.projects.best import BestReport

project_app = typer.Typer(
    name="project",
    help="Training projects: a prepared dataset, versions of a LoRA run, checkpoints and "
    "preview grids (sd-webui-train-tools style).",
    no_args_is_help=True,
)

ProjectsDirOption = Annotated[
    Path | None,
    typer.Option("--projects-dir", help="Folder of projects. [<first library root>/projects]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The project's name.")]
VersionArgument = Annotated[str, typer.Argument(metavar="VERSION", help="v1, v2, ... (or 1, 2).")]
ConceptOption = Annotated[
    str | None, typer.Option(help="Shapes world: the shape taught (e.g. heart).")
]
TriggerOption = Annotated[str | None, typer.Option(help="Shapes world: its trigger word.")]
DEFAULT_BEST_WEIGHTS = "0.4,0.6,0.8,1.0"


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _home(ctx: typer.Context, projects_dir: Path | None, root: list[Path] | None) -> Path:
    if projects_dir is not None:
        return projects_home((), projects_dir)
    from brushwork.library.layout import resolve_roots

    return projects_home(resolve_roots(settings_of(ctx), tuple(root or ())))


def _concept(shape: str | None, trigger: str | None) -> Concept | None:
    from brushwork.projects.concept import check_concept

    if shape is None and trigger is None:
        return None
    if shape is None:
        raise ConfigError("--trigger needs --concept SHAPE (the shape the trigger word draws)")
    return check_concept(shape, trigger or shape)


@project_app.command("new")
def new(
    ctx: typer.Context,
    name: NameArgument,
    images: Annotated[Path, typer.Option("--images", help="Folder of source pictures (kept).")],
    prepare_size: Annotated[
        str | None,
        typer.Option(
            help="WIDTHxHEIGHT, snapped to multiples of 64 (default 512x512); with "
            "--buckets the area the buckets share."
        ),
    ] = None,
    buckets: Annotated[
        bool, typer.Option("--buckets", help="Keep aspect ratios (kohya buckets).")
    ] = False,
    crop: Annotated[
        CropMode, typer.Option(help="center, focal or none (just resize).")
    ] = CropMode.CENTER,
    flip: Annotated[bool, typer.Option("--flip", help="Also add mirrored copies.")] = False,
    min_size: Annotated[
        int, typer.Option(help="Skip pictures whose shorter side is below N.")
    ] = 64,
    prepare: Annotated[
        bool, typer.Option("--prepare/--no-prepare", help="Resize and dedupe, or copy as they are.")
    ] = True,
    repeats: Annotated[int, typer.Option(help="Repeats of a flat folder's pictures (kohya).")] = 10,
    class_tokens: Annotated[
        str | None, typer.Option(help="Name of a flat folder's kohya folder. [the project name]")
    ] = None,
    concept: ConceptOption = None,
    trigger: TriggerOption = None,
    projects_dir: ProjectsDirOption = None,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a project: the pictures of --images prepared into its dataset (kohya folders)."""
    from brushwork.projects.summary import concept_text, project_summary

    with exit_on_error():
        options = None
        if prepare:
            size = parse_size(prepare_size) if prepare_size is not None else (512, 512)
            options = PrepareOptions(
                size=size, buckets=buckets, crop=crop, flip=flip, min_size=min_size
            )
        request = NewProject(
            name=name, images=images, prepare=options, repeats=repeats,
            class_tokens=class_tokens, concept=_concept(concept, trigger),
        )  # fmt: skip
        project = create_project(_home(ctx, projects_dir, root), request)
    if json_output:
        _print_json(project_summary(project))
        return
    info = project.record.dataset
    typer.echo(f"project {project.name}: {info.written} pictures in {project.dataset_dir}")
    for skipped in info.skipped:
        typer.echo(f"skip  [{skipped.reason}] {skipped.message}")
    concept_json = None if project.record.concept is None else project.record.concept.model_dump()
    for line in concept_text(concept_json):
        typer.echo(line)
    typer.echo(f"next: brushwork project version {_quoted(project.name)} --config FILE.toml")


def _quoted(text: str) -> str:
    return f'"{text}"' if " " in text else text


@project_app.command("version")
def version(
    ctx: typer.Context,
    name: NameArgument,
    config: Annotated[
        Path | None, typer.Option("--config", help="A flat TOML of sd-scripts options.")
    ] = None,
    from_version: Annotated[
        str | None, typer.Option("--from", help="Start from this version's options.")
    ] = None,
    base: BaseOption = None,
    set_options: SetOption = None,
    projects_dir: ProjectsDirOption = None,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make the next version (v1, v2, ...): its options resolved and kept with it."""
    from brushwork.projects.summary import version_summary
    from brushwork.projects.versions import NewVersion, create_version

    with exit_on_error():
        overrides = parse_set_options(set_options or [])
        if base is not None:
            overrides["pretrained_model_name_or_path"] = base
        project = open_project(_home(ctx, projects_dir, root), name)
        made = create_version(project, NewVersion(config, from_version, overrides))
    if json_output:
        _print_json(version_summary(made))
        return
    start = f" from {made.record.parent}" if made.record.parent else ""
    typer.echo(f"{project.name} {made.name}{start}: {made.layout.config_file}")
    print_warnings(console(), made.record.warnings)
    typer.echo(f"next: brushwork project train {_quoted(project.name)} {made.name}")


def _base_model(ctx: typer.Context, name: str, root: list[Path] | None) -> Path:
    from brushwork.cli.train_common import resolve_base_model

    return resolve_base_model(name, settings_of(ctx), root or [])


@project_app.command("train")
def train(
    ctx: typer.Context,
    name: NameArgument,
    version_name: VersionArgument,
    force: Annotated[
        bool, typer.Option("--force", help="Train a finished version again (replaces its files).")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest saved state.")
    ] = False,
    projects_dir: ProjectsDirOption = None,
    root: RootOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Train a version (a LoRA run with its options); its record says how it went."""
    from brushwork.cli.train_common import preview_factory, progress_bar
    from brushwork.projects.train import TrainOptions, train_version
    from brushwork.projects.versions import read_version_config

    out = console()
    with exit_on_error():
        project = open_project(_home(ctx, projects_dir, root), name)
        chosen = project.version(version_name)
        config = read_version_config(chosen)
        base = _base_model(ctx, config.pretrained_model_name_or_path, root)
        configure_logging(verbose)
        factory = preview_factory(out) if config.sample_prompts is not None else None
        with progress_bar(out) as hooks:
            options = TrainOptions(force=force, resume=resume, hooks=hooks, preview_factory=factory)
            done = train_version(project, chosen, base, options)
    record = done.record
    for path in record.files.checkpoints:
        typer.echo(f"saved {done.layout.absolute(path)}")
    if record.files.loss_curve:
        typer.echo(f"loss curve: {done.layout.absolute(record.files.loss_curve)}")
    typer.echo(
        f"{project.name} {done.name}: {record.steps} steps, {record.epochs} epochs in {record.seconds:.0f} s"
    )
    typer.echo(f"next: brushwork project preview {_quoted(project.name)} {done.name} --prompt ...")


def _seeds(text: str | None) -> tuple[int, ...]:
    if text is None or not text.strip():
        return ()
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"--seeds {text!r} is not a comma list of whole numbers") from None


@project_app.command("preview")
def preview(
    ctx: typer.Context,
    name: NameArgument,
    version_name: VersionArgument,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The prompt (A1111 syntax).")],
    weights: Annotated[
        str, typer.Option(help="LoRA weights (columns); ranges work: 0-1 [5].")
    ] = "0.6,0.8,1.0",
    seeds: Annotated[
        str | None, typer.Option(help="Seed(s): one for the grid (default random), or several.")
    ] = None,
    negative: NegativeOption = None,
    sampler: SamplerOption = None,
    steps: StepsOption = None,
    cfg: CfgOption = None,
    size: Annotated[str | None, typer.Option(help="WxH. [the version's resolution]")] = None,
    precision: PrecisionOption = None,
    device: DeviceOption = None,
    projects_dir: ProjectsDirOption = None,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Draw every checkpoint of a version at every weight with one seed, in one grid."""
    from brushwork.cli.options import request_values

    with exit_on_error():
        project = open_project(_home(ctx, projects_dir, root), name)
        chosen = project.version(version_name)
        values = request_values(
            prompt=prompt, negative_prompt=negative, sampler_name=sampler, steps=steps,
            cfg_scale=cfg, size=size,
        )  # fmt: skip
        info = _draw_preview(
            ctx, project, chosen, values, (weights, _seeds(seeds)), root, (precision, device)
        )
    if json_output:
        _print_json(info.model_dump(mode="json") | {"folder": str(chosen.layout.folder)})
        return
    typer.echo(
        f"saved {chosen.layout.absolute(info.file)} ({info.cells} cells, seed {', '.join(map(str, info.seeds))})"
    )


def _draw_preview(
    ctx: typer.Context,
    project: Project,
    chosen: Any,
    values: dict[str, Any],
    axes: tuple[str, tuple[int, ...]],
    root: list[Path] | None,
    machine: tuple[str | None, str | None],
) -> Any:
    import threading

    from brushwork.cli.generate_cmd import EXIT_INTERRUPTED, ctrl_c_stops, progress_bar
    from brushwork.generation import GenerationRequest
    from brushwork.library.catalog import Library
    from brushwork.loading import load_model
    from brushwork.projects.preview import PreviewRequest, PreviewRun, preview_version
    from brushwork.projects.versions import read_version_config

    settings = settings_of(ctx)
    config = read_version_config(chosen)
    if "width" not in values:
        values["width"], values["height"] = config.resolution
    library = Library.open(settings, tuple(root or ()))
    checkpoint = _base_model(
        ctx, chosen.record.base_model or config.pretrained_model_name_or_path, root
    )
    device, precision = machine[1] or settings.device, machine[0] or settings.precision
    out = console()
    cancel = threading.Event()
    with progress_bar(out) as bar, ctrl_c_stops(cancel, out):
        task = bar.add_task("cells", total=None)
        run = PreviewRun(
            checkpoint=checkpoint, library=library,
            load=lambda path, vae: load_model(path, device=device, precision=precision, vae=vae),
            progress=lambda event: bar.update(task, total=event.total, completed=event.done),
            cancel=cancel,
        )  # fmt: skip
        request = PreviewRequest(GenerationRequest(**values), axes[0], axes[1])
        _saved, info, result = preview_version(project, chosen, request, run)
    if result.interrupted:
        out.print(f"stopped; {info.cells} cells drawn, saved {info.file}")
        raise typer.Exit(EXIT_INTERRUPTED)
    return info


@project_app.command("list")
def list_(
    ctx: typer.Context,
    projects_dir: ProjectsDirOption = None,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """The projects, with their pictures and versions."""
    from brushwork.projects.summary import list_summary

    with exit_on_error():
        home = _home(ctx, projects_dir, root)
        rows = [list_summary(project) for project in list_projects(home)]
    if json_output:
        _print_json(rows)
        return
    if not rows:
        typer.echo(f"no projects in {home}")
    for row in rows:
        versions = ", ".join(f"{k} {v}" for k, v in row["versions"].items()) or "no versions"
        typer.echo(f"{row['name']}: {row['images']} pictures; {versions}")


@project_app.command("show")
def show(
    ctx: typer.Context,
    name: NameArgument,
    projects_dir: ProjectsDirOption = None,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """A project: its dataset, concept and every version with its status and files."""
    from brushwork.projects.summary import project_summary, project_text

    with exit_on_error():
        project = open_project(_home(ctx, projects_dir, root), name)
        summary = project_summary(project)
    if json_output:
        _print_json(summary)
        return
    for line in project_text(summary):
        typer.echo(line)


@project_app.command("best")
def best(
    ctx: typer.Context,
    name: NameArgument,
    version_name: VersionArgument,
    weights: Annotated[
        str | None, typer.Option(help="Weights to measure. [the last preview's, else 0.4-1.0]")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per prompt (shapes world).")] = 2,
    steps: Annotated[int, typer.Option(help="Sampling steps (shapes world).")] = 20,
    concept: ConceptOption = None,
    trigger: TriggerOption = None,
    precision: PrecisionOption = None,
    device: DeviceOption = None,
    projects_dir: ProjectsDirOption = None,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Which epoch and weight to use, and why (measured in the shapes world, else the loss)."""
    from brushwork.projects.best import best_by_loss

    with exit_on_error():
        project = open_project(_home(ctx, projects_dir, root), name)
        chosen = project.version(version_name)
        taught = _concept(concept, trigger) or project.record.concept
        if taught is None:
            report = best_by_loss(project, chosen)
        else:
            if seeds < 1 or steps < 1:
                raise ConfigError("--seeds and --steps must be at least 1")
            strengths = _weights(chosen, weights)
            report = _best_by_quality(
                ctx, project, chosen, taught, strengths, (seeds, steps), root, (precision, device)
            )
    if json_output:
        _print_json(report.to_json())
        return
    for line in report.text_lines():
        typer.echo(line)


def _weights(chosen: Any, text: str | None) -> tuple[float, ...]:
    from brushwork.generation.xyz_axes import parse_axis

    if text is None and chosen.record.previews:
        return tuple(chosen.record.previews[-1].weights)
    axis = parse_axis("lora-strength", text or DEFAULT_BEST_WEIGHTS)
    assert axis is not None
    return tuple(float(value) for value in axis.values)


def _best_by_quality(
    ctx: typer.Context,
    project: Project,
    chosen: Any,
    taught: Concept,
    strengths: tuple[float, ...],
    amounts: tuple[int, int],
    root: list[Path] | None,
    machine: tuple[str | None, str | None],
) -> BestReport:
    from brushwork.evaluation.quality import DrawSettings
    from brushwork.library.catalog import Library
    from brushwork.loading import load_model
    from brushwork.projects.shapes_quality import ShapesScoring, best_in_shapes_world
    from brushwork.projects.versions import read_version_config

    settings = settings_of(ctx)
    config = read_version_config(chosen)
    name = chosen.record.base_model or config.pretrained_model_name_or_path
    checkpoint = _base_model(ctx, name, root)
    out = console()
    out.print(f"loading {checkpoint.name}")
    device, precision = machine[1] or settings.device, machine[0] or settings.precision
    draw = DrawSettings(steps=amounts[1], size=config.resolution[0])

    def measured(candidate: Any, result: Any, done: int, total: int) -> None:
        what = "base model" if candidate is None else f"{candidate.label} at {candidate.strength:g}"
        out.print(
            f"{done}/{total} {what}: adoption {result.adoption:.0%}, "
            f"preservation {result.preservation:.0%}"
        )

    return best_in_shapes_world(
        project, chosen, taught, strengths,
        model=load_model(checkpoint, device=device, precision=precision),
        library=Library.open(settings, tuple(root or ())),
        scoring=ShapesScoring(seeds=tuple(range(amounts[0])), draw=draw),
        measured=measured,
    )  # fmt: skip
