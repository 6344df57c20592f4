"""`brushwork train lora ...`: train a LoRA the way kohya sd-scripts' train_network.py does.

Options come from a flat sd-scripts TOML (`--config`, the same keys as sd-scripts'
`--config_file`), then from flags (`--dataset DIR --base MODEL --output-name NAME ...`), then from
`--set KEY=VALUE` for any other sd-scripts option; later ones win. The base model is a file or a
library name (A1111 name, alias or hash). The resolved options are saved beside the outputs as
`<output_name>-config.toml`.

Several processes / GPUs (data parallel): run it unchanged under a launcher,
    accelerate launch --multi_gpu --num_processes 2 -m brushwork.cli.train_cmd lora --config run.toml
    torchrun --nproc_per_node 2 -m brushwork.cli.train_cmd lora --config run.toml   (CPUs: gloo)
The global batch is train_batch_size x processes x gradient_accumulation_steps. DeepSpeed and
FSDP are chosen in accelerate's own config (`accelerate config`), not here.

Exit codes: 0 done; 1 invalid options, a missing model, or a run that stopped (NaN loss).
The lead registers `train_app` in cli/main.py: `app.add_typer(train_app, name="train")`.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from brushwork.cli.errors import exit_on_error
from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.training.config import check_environment
from brushwork.training.config_file import (
    ConfigSource,
    config_toml,
    read_config_toml,
    resolve_config,
    sort_options,
)
from brushwork.training.engine import Hooks
from brushwork.training.logs import TrainingProgress

logger = logging.getLogger(__name__)

train_app = typer.Typer(
    name="train",
    help="Train LoRA networks (kohya sd-scripts compatible options and files).",
    no_args_is_help=True,
)


@train_app.callback()
def train() -> None:
    """Train networks on a checkpoint and an image folder (sd-scripts options and files)."""


# CLI flag -> sd-scripts option
FLAG_OPTIONS = {
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
    "network_dim": "network_dim",
    "network_alpha": "network_alpha",
    "conv_dim": "conv_dim",
    "conv_alpha": "conv_alpha",
    "learning_rate": "learning_rate",
    "unet_lr": "unet_lr",
    "text_encoder_lr": "text_encoder_lr",
    "optimizer": "optimizer_type",
    "scheduler": "lr_scheduler",
    "warmup_steps": "lr_warmup_steps",
    "mixed_precision": "mixed_precision",
    "seed": "seed",
    "save_every_n_epochs": "save_every_n_epochs",
    "save_every_n_steps": "save_every_n_steps",
    "resume": "resume",
    "sample_prompts": "sample_prompts",
    "sample_every_n_epochs": "sample_every_n_epochs",
    "sample_every_n_steps": "sample_every_n_steps",
}


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """`--set key=value`: the value read as a TOML value (numbers, true/false, "strings",
    [lists]); anything that is not TOML is taken as a plain string."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set {item!r} is not KEY=VALUE", hint="e.g. --set noise_offset=0.05"
            )
        try:
            values[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values[key.strip()] = raw
    return values


def resolve_base_model(name: str, settings: Settings, roots: list[Path]) -> Path:
    """A checkpoint file path, or a library name/alias/hash looked up in the library."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from brushwork.library.catalog import Library

    with Library.open(settings, roots) as library:
        return library.find(name, kind=ModelKind.CHECKPOINT).path


def preview_factory(console: Console) -> Any:
    """A factory that builds previews with `brushwork.generation`, or None with a warning."""
    try:
        from brushwork.generation import GenerationRequest, Generator
    except ImportError as exc:
        console.print(f"warning: previews are off: brushwork.generation is not available ({exc})")
        return None

    def factory(model: Any) -> Any:
        generator = Generator(model)

        def preview(request: Any) -> list[Any]:
            result = generator.generate(
                GenerationRequest(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    width=request.width,
                    height=request.height,
                    steps=request.steps,
                    cfg_scale=request.cfg_scale,
                    sampler_name=request.sampler_name,
                    seed=request.seed,
                )
            )
            images = []
            for item in result.generated:
                item.image.info["parameters"] = item.infotext
                images.append(item.image)
            return images

        return preview

    return factory


@contextmanager
def _progress_bar(console: Console) -> Iterator[Hooks]:
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} it/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task: list[TaskID] = []

        def on_progress(event: TrainingProgress) -> None:
            epoch = f"{event.epoch}/{event.total_epochs}"
            loss = f"{event.average_loss:.4f}"
            rate = f"{event.steps_per_second:.2f}"
            if not task:
                task.append(
                    progress.add_task(
                        "train", total=event.total_steps, epoch=epoch, loss=loss, rate=rate
                    )
                )
            progress.update(task[0], completed=event.step, epoch=epoch, loss=loss, rate=rate)

        yield Hooks(on_progress=on_progress)


def _configure_logging(verbose: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("brushwork").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("accelerate", "diffusers", "transformers", "peft"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@train_app.command("lora")
def lora(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="A flat sd-scripts TOML.")] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="train_data_dir: folders '<repeats>_<name>'.")
    ] = None,
    reg_dataset: Annotated[
        Path | None, typer.Option(help="reg_data_dir (regularisation images).")
    ] = None,
    dataset_config: Annotated[Path | None, typer.Option(help="A kohya dataset TOML.")] = None,
    base: Annotated[
        str | None, typer.Option(help="Base checkpoint: a file or a library name.")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option()] = None,
    output_name: Annotated[str | None, typer.Option()] = None,
    resolution: Annotated[str | None, typer.Option(help="'512' or 'width,height'.")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_epochs: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    network_dim: Annotated[int | None, typer.Option()] = None,
    network_alpha: Annotated[float | None, typer.Option()] = None,
    conv_dim: Annotated[int | None, typer.Option()] = None,
    conv_alpha: Annotated[float | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    unet_lr: Annotated[float | None, typer.Option()] = None,
    text_encoder_lr: Annotated[float | None, typer.Option()] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="AdamW, AdamW8bit, Lion, Prodigy, Adafactor.")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="lr_scheduler name.")] = None,
    warmup_steps: Annotated[float | None, typer.Option()] = None,
    mixed_precision: Annotated[str | None, typer.Option(help="no, fp16 or bf16.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    save_every_n_epochs: Annotated[int | None, typer.Option()] = None,
    save_every_n_steps: Annotated[int | None, typer.Option()] = None,
    save_state: Annotated[
        bool | None, typer.Option("--save-state", help="Save resumable state folders too.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="A '...-state' folder to continue from.")
    ] = None,
    sample_prompts: Annotated[
        Path | None, typer.Option(help="Preview prompts (kohya .txt syntax).")
    ] = None,
    sample_every_n_epochs: Annotated[int | None, typer.Option()] = None,
    sample_every_n_steps: Annotated[int | None, typer.Option()] = None,
    set_options: Annotated[
        list[str] | None, typer.Option("--set", help="Any sd-scripts option: KEY=VALUE.")
    ] = None,
    root: Annotated[
        list[Path] | None, typer.Option("--root", help="Library root for a model name.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the options, print them and stop.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a LoRA (kohya format, with ss_* metadata) on a checkpoint and an image folder."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    flags = {k: v for k, v in locals().items() if k in FLAG_OPTIONS and v is not None}
    with exit_on_error():
        sources: list[ConfigSource] = []
        if config is not None:
            sources.append(read_config_toml(config))
        cli_values = {
            FLAG_OPTIONS[k]: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()
        }
        if save_state:
            cli_values["save_state"] = True
        sources.append(sort_options(cli_values, origin="command line"))
        sources.append(sort_options(parse_set_options(set_options or []), origin="--set"))
        resolved, warnings = resolve_config(*sources)
        for message in warnings:
            console.print(f"warning: {message}")
        if dry_run:
            typer.echo(config_toml(resolved), nl=False)
            return
        check_environment(resolved, "cuda" if torch.cuda.is_available() else "cpu")
        _configure_logging(verbose)
        settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
        base_path = resolve_base_model(resolved.pretrained_model_name_or_path, settings, root or [])
        from brushwork.training.lora import train_lora

        factory = preview_factory(console) if resolved.sample_prompts is not None else None
        with _progress_bar(console) as hooks:
            outcome = train_lora(resolved, base_path, preview_factory=factory, hooks=hooks)
        console.print(outcome.plan_text)
        for path in outcome.result.saved_files:
            typer.echo(f"saved {path}")
        typer.echo(f"configuration: {outcome.config_file}")
        typer.echo(f"loss log: {outcome.result.log_csv}")


# ---- textual inversion and hypernetworks (A1111's Train tab) --------------------------------

TEMPLATE_FLAGS = {
    "dataset": "train_data_dir",
    "base": "pretrained_model_name_or_path",
    "output_dir": "output_dir",
    "output_name": "output_name",
    "resolution": "resolution",
    "batch_size": "train_batch_size",
    "max_steps": "max_train_steps",
    "learning_rate": "learning_rate",
    "template": "template_filename",
    "latent_sampling": "latent_sampling_method",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "mixed_precision": "mixed_precision",
    "seed": "seed",
    "save_every_n_steps": "save_every_n_steps",
    "resume": "resume",
    "sample_prompts": "sample_prompts",
    "sample_every_n_steps": "sample_every_n_steps",
    "token_string": "token_string",
    "init_word": "init_word",
    "num_vectors_per_token": "num_vectors_per_token",
    "save_model_as": "save_model_as",
    "layer_structure": "layer_structure",
    "activation_func": "activation_func",
    "weight_initialization": "weight_initialization",
    "enable_sizes": "enable_sizes",
}


def _template_options(
    config_class: Any, config: Path | None, flags: dict[str, Any], set_options: list[str] | None
) -> tuple[Any, tuple[str, ...]]:
    from brushwork.training.template_training import resolve_options

    known = tuple(config_class.model_fields)
    sources: list[ConfigSource] = []
    if config is not None:
        sources.append(read_config_toml(config, known=known))
    values = {
        TEMPLATE_FLAGS[k]: (str(v) if isinstance(v, Path) else v)
        for k, v in flags.items()
        if k in TEMPLATE_FLAGS and v is not None
    }
    sources.append(sort_options(values, origin="command line", known=known))
    sources.append(sort_options(parse_set_options(set_options or []), origin="--set", known=known))
    resolved, warnings = resolve_options(config_class, *sources)
    return resolved, warnings


def _embedding_preview_factory(console: Console) -> Any:
    base = preview_factory(console)
    if base is None:
        return None
    from brushwork.conditioning.embeddings import EmbeddingDatabase, model_widths

    def factory(model: Any, current: Any) -> Any:
        from brushwork.generation import GenerationRequest, Generator

        generator = Generator(model)

        def preview(request: Any) -> list[Any]:
            database = EmbeddingDatabase.from_embeddings([current()], widths=model_widths(model))
            result = generator.generate(
                GenerationRequest(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    width=request.width,
                    height=request.height,
                    steps=request.steps,
                    cfg_scale=request.cfg_scale,
                    sampler_name=request.sampler_name,
                    seed=request.seed,
                ),
                embeddings=database,
            )
            images = []
            for item in result.generated:
                item.image.info["parameters"] = item.infotext
                images.append(item.image)
            return images

        return preview

    return factory


TemplateConfigOption = Annotated[
    Path | None, typer.Option("--config", help="A flat TOML (sd-scripts / A1111 names).")
]
DatasetOption = Annotated[
    Path | None, typer.Option(help="Image folder (+ .txt captions), flat or '<n>_<name>'.")
]
BaseOption = Annotated[str | None, typer.Option(help="Base checkpoint: a file or a library name.")]
ScheduleOption = Annotated[
    str | None, typer.Option(help="A1111 schedule: '0.005' or '0.005:100, 1e-3:1000, 1e-5'.")
]
TemplateOption = Annotated[
    str | None,
    typer.Option(help="Prompt template: subject_filewords, style_filewords, ... or a file."),
]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Any option: KEY=VALUE.")]
RootOption = Annotated[list[Path] | None, typer.Option("--root", help="Library root.")]


def _run_template_training(
    ctx: typer.Context,
    kind: str,
    resolved: Any,
    warnings: tuple[str, ...],
    dry_run: bool,
    verbose: bool,
    root: list[Path] | None,
) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for message in warnings:
        console.print(f"warning: {message}")
    if dry_run:
        typer.echo(config_toml(resolved), nl=False)
        return
    _configure_logging(verbose)
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    base_path = resolve_base_model(resolved.pretrained_model_name_or_path, settings, root or [])
    with _progress_bar(console) as hooks:
        if kind == "embedding":
            from brushwork.training.textual_inversion import train_embedding

            factory = _embedding_preview_factory(console) if resolved.sample_prompts else None
            outcome: Any = train_embedding(
                resolved, base_path, preview_factory=factory, hooks=hooks
            )
        else:
            from brushwork.training.hypernetwork import train_hypernetwork

            factory = preview_factory(console) if resolved.sample_prompts else None
            outcome = train_hypernetwork(resolved, base_path, preview_factory=factory, hooks=hooks)
    for path in outcome.result.saved_files:
        typer.echo(f"saved {path}")
    typer.echo(f"configuration: {outcome.config_file}")
    typer.echo(f"loss log: {outcome.result.log_csv}")


@train_app.command("embedding")
def embedding(
    ctx: typer.Context,
    config: TemplateConfigOption = None,
    dataset: DatasetOption = None,
    base: BaseOption = None,
    output_dir: Annotated[Path | None, typer.Option()] = None,
    output_name: Annotated[str | None, typer.Option(help="File name (and trigger).")] = None,
    token_string: Annotated[str | None, typer.Option(help="Trigger word.")] = None,
    init_word: Annotated[str | None, typer.Option(help="Initialisation text.")] = None,
    num_vectors_per_token: Annotated[int | None, typer.Option()] = None,
    resolution: Annotated[str | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    learning_rate: ScheduleOption = None,
    gradient_accumulation_steps: Annotated[int | None, typer.Option()] = None,
    template: TemplateOption = None,
    latent_sampling: Annotated[
        str | None, typer.Option(help="once, deterministic or random.")
    ] = None,
    save_model_as: Annotated[str | None, typer.Option(help="pt or safetensors.")] = None,
    mixed_precision: Annotated[str | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    save_every_n_steps: Annotated[int | None, typer.Option()] = None,
    resume: Annotated[Path | None, typer.Option(help="A '...-state' folder.")] = None,
    sample_prompts: Annotated[Path | None, typer.Option()] = None,
    sample_every_n_steps: Annotated[int | None, typer.Option()] = None,
    set_options: SetOption = None,
    root: RootOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a textual-inversion embedding (A1111 .pt or .safetensors)."""
    from brushwork.training.textual_inversion import EmbeddingTrainingConfig

    flags = dict(locals())
    with exit_on_error():
        resolved, warnings = _template_options(EmbeddingTrainingConfig, config, flags, set_options)
        _run_template_training(ctx, "embedding", resolved, warnings, dry_run, verbose, root)


@train_app.command("hypernetwork")
def hypernetwork(
    ctx: typer.Context,
    config: TemplateConfigOption = None,
    dataset: DatasetOption = None,
    base: BaseOption = None,
    output_dir: Annotated[Path | None, typer.Option()] = None,
    output_name: Annotated[str | None, typer.Option(help="Hypernetwork name.")] = None,
    layer_structure: Annotated[str | None, typer.Option(help="e.g. '1, 2, 1'.")] = None,
    activation_func: Annotated[str | None, typer.Option(help="linear, relu, ...")] = None,
    weight_initialization: Annotated[str | None, typer.Option(help="Normal, Xavier*, ...")] = None,
    enable_sizes: Annotated[
        str | None, typer.Option(help="Context widths, e.g. '768, 320'.")
    ] = None,
    resolution: Annotated[str | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    learning_rate: ScheduleOption = None,
    gradient_accumulation_steps: Annotated[int | None, typer.Option()] = None,
    template: TemplateOption = None,
    latent_sampling: Annotated[str | None, typer.Option()] = None,
    mixed_precision: Annotated[str | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    save_every_n_steps: Annotated[int | None, typer.Option()] = None,
    resume: Annotated[Path | None, typer.Option(help="A '...-state' folder.")] = None,
    sample_prompts: Annotated[Path | None, typer.Option()] = None,
    sample_every_n_steps: Annotated[int | None, typer.Option()] = None,
    set_options: SetOption = None,
    root: RootOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train an A1111 hypernetwork (.pt)."""
    from brushwork.training.hypernetwork import HypernetworkTrainingConfig

    flags = dict(locals())
    with exit_on_error():
        resolved, warnings = _template_options(
            HypernetworkTrainingConfig, config, flags, set_options
        )
        _run_template_training(ctx, "hypernetwork", resolved, warnings, dry_run, verbose, root)


if __name__ == "__main__":  # `accelerate launch -m brushwork.cli.train_cmd lora ...`
    train_app()
