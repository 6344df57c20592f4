"""`brushwork train lora|embedding|hypernetwork|dreambooth ...`: train the way kohya sd-scripts
(LoRA, DreamBooth) and A1111's Train tab (embeddings, hypernetworks) do.

Options come from a flat TOML (`--config`, sd-scripts' `--config_file` keys; A1111's names where
sd-scripts has none), then from flags (`--dataset DIR --base MODEL --output-name NAME ...`), then
from `--set KEY=VALUE` for any other option; later ones win. The base model is a file or a
library name (A1111 name, alias or hash). The resolved options are saved beside the outputs as
`<output_name>-config.toml`. DreamBooth's commands are in `train_dreambooth_cmd`.

Several processes / GPUs (data parallel): run it unchanged under a launcher,
    accelerate launch --multi_gpu --num_processes 2 -m brushwork.cli.train_cmd lora --config run.toml
    torchrun --nproc_per_node 2 -m brushwork.cli.train_cmd lora --config run.toml   (CPUs: gloo)
The global batch is train_batch_size x processes x gradient_accumulation_steps. DeepSpeed and
FSDP are chosen in accelerate's own config (`accelerate config`), not here.

Exit codes: 0 done; 1 invalid options, a missing model, or a run that stopped (NaN loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console

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
    generate_images,
    generation_available,
    option_sources,
    parse_set_options,
    preview_factory,
    print_warnings,
    progress_bar,
    report_run,
    resolve_base_model,
    settings_of,
)
from brushwork.cli.train_dreambooth_cmd import dreambooth_app
from brushwork.training.config import LoraTrainingConfig, check_environment
from brushwork.training.config_file import config_toml, resolve_config

__all__ = ["parse_set_options", "train_app"]

train_app = typer.Typer(
    name="train",
    help="Train LoRA, DreamBooth checkpoints, embeddings and hypernetworks.",
    no_args_is_help=True,
)
train_app.add_typer(dreambooth_app, name="dreambooth")


@train_app.callback()
def train() -> None:
    """Train models on a checkpoint and an image folder (sd-scripts / A1111 options and files)."""


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
    "save_state": "save_state",
    "resume": "resume",
    "sample_prompts": "sample_prompts",
    "sample_every_n_epochs": "sample_every_n_epochs",
    "sample_every_n_steps": "sample_every_n_steps",
}


@train_app.command("lora")
def lora(
    ctx: typer.Context,
    config: ConfigOption = None,
    dataset: Annotated[
        Path | None, typer.Option(help="train_data_dir: folders '<repeats>_<name>'.")
    ] = None,
    reg_dataset: Annotated[
        Path | None, typer.Option(help="reg_data_dir (regularisation images).")
    ] = None,
    dataset_config: Annotated[Path | None, typer.Option(help="A kohya dataset TOML.")] = None,
    base: BaseOption = None,
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
    resume: ResumeOption = None,
    sample_prompts: SamplePromptsOption = None,
    sample_every_n_epochs: Annotated[int | None, typer.Option()] = None,
    sample_every_n_steps: Annotated[int | None, typer.Option()] = None,
    set_options: SetOption = None,
    root: RootOption = None,
    dry_run: DryRunOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train a LoRA (kohya format, with ss_* metadata) on a checkpoint and an image folder."""
    out = console()
    flags = dict(locals())
    with exit_on_error():
        known = tuple(LoraTrainingConfig.model_fields)
        sources = option_sources(config, flags, FLAG_OPTIONS, set_options, known=known)
        resolved, warnings = resolve_config(*sources)
        print_warnings(out, warnings)
        if dry_run:
            typer.echo(config_toml(resolved), nl=False)
            return
        check_environment(resolved, "cuda" if torch.cuda.is_available() else "cpu")
        configure_logging(verbose)
        base_path = resolve_base_model(
            resolved.pretrained_model_name_or_path, settings_of(ctx), root or []
        )
        from brushwork.training.lora import train_lora

        factory = preview_factory(out) if resolved.sample_prompts is not None else None
        with progress_bar(out) as hooks:
            outcome = train_lora(resolved, base_path, preview_factory=factory, hooks=hooks)
        out.print(outcome.plan_text)
        report_run(outcome.result, outcome.config_file)


# ---- textual inversion and hypernetworks (A1111's Train tab) --------------------------------

TEMPLATE_FLAGS = {
    "dataset": "train_data_dir",
    "base": "pretrained_model_name_or_path",
    "weights": "weights",
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
    "save_state": "save_state",
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
    "layer_norm": "is_layer_norm",
    "dropout_structure": "dropout_structure",
    "enable_sizes": "enable_sizes",
}

DatasetOption = Annotated[
    Path | None, typer.Option(help="Image folder (+ .txt captions), flat or '<n>_<name>'.")
]
OutputDirOption = Annotated[Path | None, typer.Option()]
ResolutionOption = Annotated[str | None, typer.Option(help="'512' or 'width,height'.")]
IntOption = Annotated[int | None, typer.Option()]
ScheduleOption = Annotated[
    str | None, typer.Option(help="A1111 schedule: '0.005' or '0.005:100, 1e-3:1000, 1e-5'.")
]
TemplateOption = Annotated[
    str | None,
    typer.Option(help="Prompt template: subject_filewords, style_filewords, ... or a file."),
]
LatentSamplingOption = Annotated[str | None, typer.Option(help="once, deterministic or random.")]
PrecisionOption = Annotated[str | None, typer.Option(help="no, fp16 or bf16.")]
SaveStateOption = Annotated[
    bool | None, typer.Option("--save-state", help="Save resumable state folders too.")
]
SampleEveryOption = Annotated[
    int | None,
    typer.Option(help="A preview every N steps (the last training prompt, or sample_prompts)."),
]


def _embedding_preview_factory(out: Console) -> Any:
    if not generation_available(out):
        return None
    from brushwork.conditioning.embeddings import EmbeddingDatabase, model_widths

    def factory(model: Any, current: Any) -> Any:
        from brushwork.generation import Generator

        generator = Generator(model)

        def preview(request: Any) -> list[Any]:
            database = EmbeddingDatabase.from_embeddings([current()], widths=model_widths(model))
            return generate_images(generator, request, embeddings=database)

        return preview

    return factory


def _run_template_training(
    ctx: typer.Context,
    kind: str,
    config_class: Any,
    flags: dict[str, Any],
) -> None:
    """Resolve the options of an embedding/hypernetwork command and run it."""
    from brushwork.training.template_training import resolve_options

    out = console()
    known = tuple(config_class.model_fields)
    sources = option_sources(
        flags["config"], flags, TEMPLATE_FLAGS, flags["set_options"], known=known
    )
    resolved, warnings = resolve_options(config_class, *sources)
    print_warnings(out, warnings)
    if flags["dry_run"]:
        typer.echo(config_toml(resolved), nl=False)
        return
    configure_logging(flags["verbose"])
    base_path = resolve_base_model(
        resolved.pretrained_model_name_or_path, settings_of(ctx), flags["root"] or []
    )
    previews = resolved.sample_prompts is not None or resolved.sample_every_n_steps is not None
    with progress_bar(out) as hooks:
        if kind == "embedding":
            from brushwork.training.textual_inversion import train_embedding

            factory = _embedding_preview_factory(out) if previews else None
            outcome: Any = train_embedding(
                resolved, base_path, preview_factory=factory, hooks=hooks
            )
        else:
            from brushwork.training.hypernetwork import train_hypernetwork

            factory = preview_factory(out) if previews else None
            outcome = train_hypernetwork(resolved, base_path, preview_factory=factory, hooks=hooks)
    print_warnings(out, outcome.warnings)
    report_run(outcome.result, outcome.config_file)


@train_app.command("embedding")
def embedding(
    ctx: typer.Context,
    config: ConfigOption = None,
    dataset: DatasetOption = None,
    base: BaseOption = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="An embedding file to continue training: counts from the file's own step up to"
            " --max-steps (the step to stop at), as A1111 does."
        ),
    ] = None,
    output_dir: OutputDirOption = None,
    output_name: Annotated[str | None, typer.Option(help="File name (and trigger).")] = None,
    token_string: Annotated[str | None, typer.Option(help="Trigger word.")] = None,
    init_word: Annotated[str | None, typer.Option(help="Initialisation text.")] = None,
    num_vectors_per_token: IntOption = None,
    resolution: ResolutionOption = None,
    batch_size: IntOption = None,
    max_steps: IntOption = None,
    learning_rate: ScheduleOption = None,
    gradient_accumulation_steps: IntOption = None,
    template: TemplateOption = None,
    latent_sampling: LatentSamplingOption = None,
    save_model_as: Annotated[str | None, typer.Option(help="pt or safetensors.")] = None,
    mixed_precision: PrecisionOption = None,
    seed: IntOption = None,
    save_every_n_steps: IntOption = None,
    save_state: SaveStateOption = None,
    resume: ResumeOption = None,
    sample_prompts: SamplePromptsOption = None,
    sample_every_n_steps: SampleEveryOption = None,
    set_options: SetOption = None,
    root: RootOption = None,
    dry_run: DryRunOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train a textual-inversion embedding (A1111 .pt or .safetensors)."""
    from brushwork.training.textual_inversion import EmbeddingTrainingConfig

    flags = dict(locals())
    with exit_on_error():
        _run_template_training(ctx, "embedding", EmbeddingTrainingConfig, flags)


@train_app.command("hypernetwork")
def hypernetwork(
    ctx: typer.Context,
    config: ConfigOption = None,
    dataset: DatasetOption = None,
    base: BaseOption = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="A hypernetwork .pt to continue training: counts from the file's own step up to"
            " --max-steps (the step to stop at), as A1111 does."
        ),
    ] = None,
    output_dir: OutputDirOption = None,
    output_name: Annotated[str | None, typer.Option(help="Hypernetwork name.")] = None,
    layer_structure: Annotated[str | None, typer.Option(help="e.g. '1, 2, 1'.")] = None,
    activation_func: Annotated[str | None, typer.Option(help="linear, relu, ...")] = None,
    weight_initialization: Annotated[
        str | None, typer.Option(help="Normal, KaimingUniform, XavierNormal, ...")
    ] = None,
    layer_norm: Annotated[
        bool | None, typer.Option("--layer-norm", help="Add layer normalisation.")
    ] = None,
    dropout_structure: Annotated[
        str | None, typer.Option(help="Dropout per layer, e.g. '0, 0.3, 0' (turns dropout on).")
    ] = None,
    enable_sizes: Annotated[
        str | None, typer.Option(help="Context widths, e.g. '768, 320, 640, 1280'.")
    ] = None,
    resolution: ResolutionOption = None,
    batch_size: IntOption = None,
    max_steps: IntOption = None,
    learning_rate: ScheduleOption = None,
    gradient_accumulation_steps: IntOption = None,
    template: TemplateOption = None,
    latent_sampling: LatentSamplingOption = None,
    mixed_precision: PrecisionOption = None,
    seed: IntOption = None,
    save_every_n_steps: IntOption = None,
    save_state: SaveStateOption = None,
    resume: ResumeOption = None,
    sample_prompts: SamplePromptsOption = None,
    sample_every_n_steps: SampleEveryOption = None,
    set_options: SetOption = None,
    root: RootOption = None,
    dry_run: DryRunOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train an A1111 hypernetwork (.pt)."""
    from brushwork.training.hypernetwork import HypernetworkTrainingConfig

    flags = dict(locals())
    if dropout_structure is not None:
        flags["set_options"] = ["use_dropout=true", *(set_options or [])]
    with exit_on_error():
        _run_template_training(ctx, "hypernetwork", HypernetworkTrainingConfig, flags)


if __name__ == "__main__":  # `accelerate launch -m brushwork.cli.train_cmd lora ...`
    train_app()
