"""`brushwork train scratch`: train a small SD1-family model from scratch, from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from brushwork.cli.errors import exit_on_error


def _progress_printer(stage: str) -> Any:
    from brushwork.training.engine import Hooks

    def show(progress: Any) -> None:
        every = max(1, progress.total_steps // 50)
        if progress.step % every == 0 or progress.step == progress.total_steps:
            eta = f", ETA {progress.eta_seconds:.0f} s" if progress.eta_seconds else ""
            typer.echo(
                f"{stage} step {progress.step}/{progress.total_steps}: loss "
                f"{progress.average_loss:.4f} ({progress.steps_per_second:.2f} it/s{eta})",
                err=True,
            )

    return Hooks(on_progress=show)


def run_scratch(config_file: Path, overrides: dict[str, Any]) -> Path:
    """Train from `config_file` (+ overrides); print what was written; return the model file."""
    from brushwork.training.scratch import read_scratch_config, train_from_scratch

    config = read_scratch_config(config_file, overrides)
    result = train_from_scratch(
        config, vae_hooks=_progress_printer("vae"), hooks=_progress_printer("diffusion")
    )
    typer.echo(
        f"trained {result.model_file} from scratch on {result.images} pictures "
        f"({result.vae_steps} VAE steps, {result.steps} diffusion steps); "
        f"created model: {result.init_file}; loss curve: {result.result.loss_curve}"
    )
    return result.model_file


def scratch(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="TOML: model_config (JSON of the unet/vae/text_encoder configs), "
            "train_data_dir, output_dir, output_name, resolution, max_train_steps, "
            "train_batch_size, learning_rate, vae_steps, ema_decay, ... (tables are flattened).",
        ),
    ],
    train_data_dir: Annotated[
        Path | None, typer.Option(help="Pictures with .txt captions (overrides the config).")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Where files go.")] = None,
    output_name: Annotated[str | None, typer.Option(help="File stem of the model.")] = None,
    max_train_steps: Annotated[int | None, typer.Option(help="Diffusion steps.")] = None,
    vae_steps: Annotated[int | None, typer.Option(help="Autoencoder steps.")] = None,
    vae: Annotated[
        Path | None, typer.Option(help="Use this trained VAE file instead of training one.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the whole run.")] = None,
    init_model: Annotated[
        Path | None,
        typer.Option(help="Continue this model (made here) instead of starting from nothing."),
    ] = None,
) -> None:
    """Train a small SD1-family model from scratch: an autoencoder first, then the UNet and text
    encoder on its latents. Writes `<output_name>.safetensors` (A1111 single file)."""
    overrides = {
        key: value
        for key, value in {
            "train_data_dir": train_data_dir,
            "output_dir": output_dir,
            "output_name": output_name,
            "max_train_steps": max_train_steps,
            "vae_steps": vae_steps,
            "vae": vae,
            "seed": seed,
            "init_model": init_model,
        }.items()
        if value is not None
    }
    with exit_on_error():
        run_scratch(config, overrides)
