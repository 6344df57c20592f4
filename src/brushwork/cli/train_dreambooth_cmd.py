"""`brushwork train dreambooth ...`: DreamBooth the way kohya sd-scripts' train_db.py does it,
with the WebUI DreamBooth extension's "create model" step and class-image generation.

    brushwork train dreambooth create NAME --from CHECKPOINT --token sks --class-word dog
    brushwork train dreambooth --config <projects>/NAME/config.toml

Without a subcommand it trains: options from a flat sd-scripts TOML (`--config`), then flags,
then `--set KEY=VALUE`. Missing class images (`num_class_images` above what `reg_data_dir` has)
are generated with the base model first, with a progress bar; the model used for them is freed
before training starts.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from brushwork.cli.errors import exit_on_error
from brushwork.cli.train_common import (
    BaseOption,
    ConfigOption,
    DryRunOption,
    ResumeOption,
    RootOption,
    SamplePromptsOption,
    SetOption,
    VerboseOption,
    configure_logging,
    console,
    option_sources,
    preview_factory,
    print_warnings,
    progress_bar,
    report_run,
    resolve_base_model,
    settings_of,
)
from brushwork.core.settings import Settings
from brushwork.training.config import check_environment
from brushwork.training.config_file import config_toml, resolve_config_as
from brushwork.training.dreambooth_config import DreamBoothTrainingConfig
from brushwork.training.dreambooth_data import (
    ClassImageProgress,
    class_image_needs,
    describe_needs,
    ensure_class_images,
)

dreambooth_app = typer.Typer(
    name="dreambooth",
    help="DreamBooth: fine-tune a whole checkpoint on a subject (sd-scripts train_db options).",
)

# CLI flag -> sd-scripts (or diffusers) option
DREAMBOOTH_FLAGS = {
    "dataset": "train_data_dir",
    "reg_dataset": "reg_data_dir",
    "dataset_config": "dataset_config",
    "base": "pretrained_model_name_or_path",
    "output_dir": "output_dir",
    "output_name": "output_name",
    "resolution": "resolution",
    "batch_size": "train_batch_size",
    "max_epochs": "max_train_epochs",
    "max_steps": "max_train_steps",
    "learning_rate": "learning_rate",
    "learning_rate_te": "learning_rate_te",
    "train_text_encoder": "train_text_encoder",
    "stop_text_encoder_training": "stop_text_encoder_training",
    "prior_loss_weight": "prior_loss_weight",
    "class_prompt": "class_prompt",
    "num_class_images": "num_class_images",
    "gradient_checkpointing": "gradient_checkpointing",
    "cache_latents": "cache_latents",
    "optimizer": "optimizer_type",
    "scheduler": "lr_scheduler",
    "mixed_precision": "mixed_precision",
    "save_precision": "save_precision",
    "save_model_as": "save_model_as",
    "seed": "seed",
    "save_every_n_epochs": "save_every_n_epochs",
    "save_every_n_steps": "save_every_n_steps",
    "save_state": "save_state",
    "resume": "resume",
    "sample_prompts": "sample_prompts",
    "sample_every_n_epochs": "sample_every_n_epochs",
    "sample_every_n_steps": "sample_every_n_steps",
}

IntOption = Annotated[int | None, typer.Option()]
FloatOption = Annotated[float | None, typer.Option()]
FlagOption = Annotated[bool | None, typer.Option()]


@dreambooth_app.callback(invoke_without_command=True)
def dreambooth(
    ctx: typer.Context,
    config: ConfigOption = None,
    dataset: Annotated[
        Path | None, typer.Option(help="train_data_dir: folders '<repeats>_<token> <class>'.")
    ] = None,
    reg_dataset: Annotated[
        Path | None, typer.Option(help="reg_data_dir: class images, folders '<repeats>_<class>'.")
    ] = None,
    dataset_config: Annotated[Path | None, typer.Option(help="A kohya dataset TOML.")] = None,
    base: BaseOption = None,
    output_dir: Annotated[Path | None, typer.Option()] = None,
    output_name: Annotated[str | None, typer.Option()] = None,
    resolution: Annotated[str | None, typer.Option(help="'512' or 'width,height'.")] = None,
    batch_size: IntOption = None,
    max_epochs: IntOption = None,
    max_steps: IntOption = None,
    learning_rate: FloatOption = None,
    learning_rate_te: Annotated[float | None, typer.Option(help="Text encoder's rate.")] = None,
    train_text_encoder: Annotated[
        bool | None, typer.Option("--train-text-encoder/--no-train-text-encoder")
    ] = None,
    stop_text_encoder_training: Annotated[
        int | None, typer.Option(help="Train the text encoder for the first N steps only.")
    ] = None,
    prior_loss_weight: FloatOption = None,
    class_prompt: Annotated[
        str | None, typer.Option(help="Prompt of the class images (default: the class word).")
    ] = None,
    num_class_images: Annotated[
        int | None, typer.Option(help="Generate class images up to this many per class.")
    ] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option("--gradient-checkpointing")] = None,
    cache_latents: Annotated[bool | None, typer.Option("--cache-latents")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="AdamW, AdamW8bit (bitsandbytes), Lion, Adafactor, ...")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="lr_scheduler name.")] = None,
    mixed_precision: Annotated[str | None, typer.Option(help="no, fp16 or bf16.")] = None,
    save_precision: Annotated[str | None, typer.Option(help="float, fp16 or bf16.")] = None,
    save_model_as: Annotated[str | None, typer.Option(help="safetensors or ckpt.")] = None,
    seed: IntOption = None,
    save_every_n_epochs: IntOption = None,
    save_every_n_steps: IntOption = None,
    save_state: Annotated[
        bool | None, typer.Option("--save-state", help="Save resumable state folders too.")
    ] = None,
    resume: ResumeOption = None,
    sample_prompts: SamplePromptsOption = None,
    sample_every_n_epochs: IntOption = None,
    sample_every_n_steps: IntOption = None,
    set_options: SetOption = None,
    root: RootOption = None,
    dry_run: DryRunOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train a DreamBooth checkpoint (A1111 .safetensors), or `create` a project to train."""
    if ctx.invoked_subcommand is not None:
        return
    out = console()
    flags = dict(locals())
    with exit_on_error():
        known = tuple(DreamBoothTrainingConfig.model_fields)
        sources = option_sources(config, flags, DREAMBOOTH_FLAGS, set_options, known=known)
        resolved, warnings = resolve_config_as(DreamBoothTrainingConfig, *sources)
        print_warnings(out, warnings)
        if dry_run:
            typer.echo(config_toml(resolved), nl=False)
            needs = class_image_needs(resolved)
            if needs:
                out.print(describe_needs(needs))
            return
        made = ("reg_data_dir",) if resolved.num_class_images else ()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        check_environment(resolved, device, made_by_the_run=made)
        configure_logging(verbose)
        settings = settings_of(ctx)
        base_path = resolve_base_model(resolved.pretrained_model_name_or_path, settings, root or [])
        _generate_class_images(resolved, base_path, settings, out)
        _train(resolved, base_path, out)


def _train(config: DreamBoothTrainingConfig, base_path: Path, out: Console) -> None:
    from brushwork.training.dreambooth import train_dreambooth

    factory = preview_factory(out) if config.sample_prompts is not None else None
    with progress_bar(out) as hooks:
        outcome = train_dreambooth(config, base_path, preview_factory=factory, hooks=hooks)
    out.print(outcome.plan_text)
    report_run(outcome.result, outcome.config_file)


class ClassImageMaker:
    """`make_class_images(prompt, count, size, seed)` with `brushwork.generation`: the base
    model is loaded on the first call and freed by `close()`."""

    def __init__(self, base: Path, config: DreamBoothTrainingConfig, settings: Settings) -> None:
        self.base = base
        self.config = config
        self.settings = settings
        self._generator: Any = None

    def __call__(
        self, prompt: str, count: int, size: tuple[int, int], seed: int
    ) -> list[Image.Image]:
        from brushwork.generation import GenerationRequest
        from brushwork.training.samples import sampler_for

        if self._generator is None:
            self._generator = self._load()
        result = self._generator.generate(
            GenerationRequest(
                prompt=prompt,
                negative_prompt=self.config.class_negative_prompt,
                width=size[0],
                height=size[1],
                steps=self.config.class_infer_steps,
                cfg_scale=self.config.class_guidance_scale,
                sampler_name=sampler_for(self.config.sample_sampler),
                seed=seed,
                batch_size=count,
            )
        )
        images = []
        for item in result.generated:
            item.image.info["parameters"] = item.infotext
            images.append(item.image)
        return images

    def _load(self) -> Any:
        from brushwork.generation import Generator
        from brushwork.loading import load_model

        model = load_model(
            self.base,
            device=self.settings.device,
            precision=self.settings.precision,
            vae=self.config.vae or "auto",
        )
        return Generator(model)

    def close(self) -> None:
        self._generator = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _generate_class_images(
    config: DreamBoothTrainingConfig, base: Path, settings: Settings, out: Console
) -> None:
    needs = [need for need in class_image_needs(config) if need.missing]
    if not needs:
        return
    out.print(describe_needs(needs))
    maker = ClassImageMaker(base, config, settings)
    try:
        with _class_progress(out) as progress:
            written = ensure_class_images(config, maker, progress=progress)
    finally:
        maker.close()
    out.print(f"generated {len(written)} class images")


@contextmanager
def _class_progress(out: Console) -> Iterator[ClassImageProgress]:
    columns = (TextColumn("class images {task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def update(prompt: str, done: int, total: int) -> None:
            if prompt not in tasks:
                tasks[prompt] = progress.add_task(repr(prompt), total=total, completed=done)
            progress.update(tasks[prompt], completed=done)

        yield update


@dreambooth_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project (and output) name.")],
    source: Annotated[
        str, typer.Option("--from", help="Source checkpoint: a file or a library name.")
    ],
    token: Annotated[str, typer.Option(help="The rare instance token.")] = "sks",
    class_word: Annotated[str, typer.Option(help="The class: dog, man, woman, style...")] = (
        "person"
    ),
    repeats: Annotated[int, typer.Option(help="Repeats of each instance image.")] = 10,
    num_class_images: Annotated[
        int, typer.Option(help="Class images to have (missing ones are generated); 0: none.")
    ] = 100,
    resolution: Annotated[
        int | None, typer.Option(help="Training size (default: the model's native one).")
    ] = None,
    projects_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Where projects live (default: <data dir>/dreambooth)."),
    ] = None,
    reference: Annotated[
        bool, typer.Option("--reference", help="Point at the source instead of copying it.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    root: RootOption = None,
) -> None:
    """Make a DreamBooth project from a checkpoint: a working copy of the model, image folders,
    preview prompts and a starter config.toml."""
    from brushwork.training.dreambooth_project import ProjectRequest, create_project

    with exit_on_error():
        settings = settings_of(ctx)
        source_path = resolve_base_model(source, settings, root or [])
        created = create_project(
            ProjectRequest(
                name=name,
                source=source_path,
                projects_dir=projects_dir or settings.data_dir / "dreambooth",
                token=token,
                class_word=class_word,
                repeats=repeats,
                num_class_images=num_class_images,
                resolution=resolution,
                reference=reference,
                overwrite=overwrite,
            )
        )
    layout = created.layout
    typer.echo(f"project: {layout.folder}")
    typer.echo(f"model: {created.model_file}")
    typer.echo(f"instance images: {created.instance_dir}")
    typer.echo(f"class images: {created.class_dir}")
    typer.echo(f"config: {layout.config_file}")
    typer.echo(f"next: brushwork train dreambooth --config {layout.config_file}")
