"""`brushwork dev ...`: tools for developers and benchmarks (random-weight models of real shapes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from brushwork.cli.errors import exit_on_error
from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily

dev_app = typer.Typer(
    help="Developer tools: random-weight models of the real architectures, for tests and benchmarks.",
    no_args_is_help=True,
)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dev_app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Argument(help="Checkpoint to write (.safetensors or .ckpt).")],
    family: Annotated[BaseFamily, typer.Option(help="Architecture family.")] = BaseFamily.SD1,
    size: Annotated[
        str, typer.Option(help="`tiny` (a few MB, for tests) or `full` (real SD size, GBs).")
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16 on disk.")] = "fp32",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write a random-weight checkpoint of a real architecture in the A1111 single-file layout.

    The weights are noise: the file is for trying the tools and for benchmarks, not for drawing.
    A non-standard size gets an A1111-style `<stem>.yaml` sidecar describing the architecture.
    """
    from brushwork.testing.factory import build_components, write_checkpoint_file

    with exit_on_error():
        if out.exists() and not force:
            raise ConfigError(f"{out} already exists", hint="pass --force to replace it")
        if precision not in _DTYPES:
            raise ConfigError(f"unknown precision {precision!r}", hint="use fp32, fp16 or bf16")
        if size not in {"tiny", "full"}:
            raise ConfigError(f"unknown size {size!r}", hint="use tiny or full")
        components = build_components(family, size=size, seed=seed)
        write_checkpoint_file(components, out, dtype=_DTYPES[precision])
        typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {family.value}, {size})")
