"""`brushwork prompt explain` and `brushwork pnginfo`: what a prompt means, what an image holds."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from brushwork.cli.errors import exit_on_error
from brushwork.cli.models_cmd import RootOption, _settings
from brushwork.core.errors import BrushworkError

prompt_app = typer.Typer(
    help="The A1111 prompt language: see what a prompt means.", no_args_is_help=True
)
logger = logging.getLogger(__name__)


def _library_embeddings(ctx: typer.Context, roots: list[Path] | None) -> list[Any]:
    """Every readable embedding in the library (names are what matter for matching)."""
    from brushwork.formats.embedding import read_embedding
    from brushwork.library.catalog import Library

    found = []
    with Library.open(_settings(ctx), roots or ()) as library:
        for entry in library.scan().of_kind({"embedding"}):
            try:
                found.append(read_embedding(entry.path))
            except BrushworkError as exc:
                logger.warning("skipping embedding %s: %s", entry.path, exc)
    return found


@prompt_app.command("explain")
def explain(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The prompt, as you would type it in A1111.")],
    negative: Annotated[str, typer.Option("--negative", help="The negative prompt.")] = "",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Sampling steps.")] = 20,
    hires_steps: Annotated[
        int | None, typer.Option("--hires-steps", min=1, help="Hires-fix second-pass steps.")
    ] = None,
    root: RootOption = None,
    no_library: Annotated[
        bool, typer.Option("--no-library", help="Do not look for embeddings in the library.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Explain a prompt: networks, AND parts, the per-step schedule, emphasis, chunks, embeddings."""
    from brushwork.conditioning.explain import explain_prompt
    from brushwork.core.kinds import BaseFamily
    from brushwork.loading.modules import load_tokenizers

    with exit_on_error():
        embeddings = [] if no_library else _library_embeddings(ctx, root)
        tokenizer = load_tokenizers(BaseFamily.SD1, ["text_encoder"])["text_encoder"]
        report = explain_prompt(
            text,
            negative_prompt=negative,
            steps=steps,
            hires_steps=hires_steps,
            tokenizer=tokenizer,
            embeddings=embeddings,
        ).to_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_explanation(Console(highlight=False), report)


def _print_explanation(console: Console, report: dict[str, Any]) -> None:
    for network in report["networks"]:
        console.print(
            f"network: {network['kind']} [bold]{escape(network['name'])}[/] "
            f"te={network['te']} unet={network['unet']}"
            + (f"  ({'; '.join(network['problems'])})" if network["problems"] else "")
        )
    parts = report["parts"]
    for index, part in enumerate([*parts, report["negative"]]):
        title = "negative prompt" if index == len(parts) else f"part {index + 1}/{len(parts)}"
        if index < len(parts) and len(parts) > 1:
            title += f" (AND weight {part['weight']})"
        table = Table(title=title, title_justify="left")
        for column in ("steps", "text", "emphasis", "chunks", "tokens", "embeddings"):
            table.add_column(column, overflow="fold")
        start = 1
        for scheduled in part["schedule"]:
            emphasis = ", ".join(
                f"{escape(run)!r}x{weight:g}"
                for run, weight in scheduled["attention"]
                if weight != 1.0
            )
            table.add_row(
                f"{start}-{scheduled['until_step']}",
                escape(scheduled["text"]),
                emphasis or "-",
                str(scheduled["chunks"]),
                f"{scheduled['token_count']} ({'+'.join(map(str, scheduled['tokens_per_chunk']))})",
                ", ".join(scheduled["embeddings"]) or "-",
            )
            start = scheduled["until_step"] + 1
        console.print(table)


def pnginfo(
    image: Annotated[Path, typer.Argument(help="A PNG, JPEG or WEBP image.", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the parsed parameters as JSON (A1111's keys).")
    ] = False,
) -> None:
    """Read the generation parameters (A1111 infotext) stored in an image."""
    from brushwork.prompt import parse_infotext, read_image_infotext

    with exit_on_error():
        try:
            data = image.read_bytes()
        except OSError as exc:
            raise BrushworkError(f"{image}: cannot be read: {exc.strerror or exc}") from None
        try:
            text = read_image_infotext(data)
        except ValueError as exc:
            raise BrushworkError(f"{image}: not an image brushwork can read ({exc})") from None
    if text is None:
        typer.echo(f"{image}: no generation parameters in this image", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(parse_infotext(text), indent=2, ensure_ascii=False))
    else:
        typer.echo(text)
