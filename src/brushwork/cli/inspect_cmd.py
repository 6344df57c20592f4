"""`brushwork inspect FILE [--json]`: what a model file is, without loading it into a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from brushwork.cli.errors import exit_on_error

_UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
# summary fields shown under another label than their name
_LABELS = {
    "dim": "Dim (rank)",
    "dims": "Dims",
    "has_ema": "EMA weights",
    "has_vae": "Baked VAE",
    "unet_in_channels": "UNet input channels",
    "unet_modules": "UNet modules",
    "a1111_loadable": "A1111 can load it",
    "top_tags": "Top trained tags",
    "output_name": "Output name (ss_output_name)",
}


def inspect(
    file: Annotated[
        Path,
        typer.Argument(help="A model file: .safetensors, .ckpt, .pt or .bin.", show_default=False),
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Show a model file's kind, base family, format, precision, size and a summary.

    Safetensors files are read from their header only; pickles are opened with the guarded
    loader, which refuses (exit code 2) any file that would run code.
    """
    from brushwork.formats.summary import summarize_file  # torch loads only when a command runs

    with exit_on_error():
        report = summarize_file(file).to_dict()
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    Console().print(render_report(report))


def render_report(report: dict[str, Any]) -> Table:
    """The human view of an `inspect --json` object, as a two-column table."""
    table = Table(title=Text(report["path"]), show_header=False, box=box.SIMPLE_HEAD)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows: list[tuple[str, str]] = [
        ("Kind", report["kind"]),
        ("Base", report["base"] or "unknown"),
        ("Format", report["format"] + (f" ({report['layout']} names)" if report["layout"] else "")),
        ("Size", f"{_human(report['size'])}B ({report['size']:,} bytes)"),
        ("Tensors", f"{report['tensors']:,}"),
        ("Parameters", f"{_human(report['parameters'])} ({report['parameters']:,})"),
        (
            "Precision",
            ", ".join(f"{name} x {count:,}" for name, count in report["precision"].items()),
        ),
    ]
    rows += [
        (_LABELS.get(key, _label(key)), _value(value)) for key, value in report["summary"].items()
    ]
    rows.append(("Metadata", f"{len(report['metadata'])} keys" if report["metadata"] else "none"))
    rows.append(("Why", "\n".join(report["reasons"])))
    for label, value in rows:
        table.add_row(Text(label), Text(value))
    return table


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _human(number: float) -> str:
    for scale, unit in _UNITS:
        if number >= scale:
            return f"{number / scale:.2f} {unit}"
    return f"{int(number)} "


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_item(item) for item in value) or "-"
    return str(value)


def _item(item: Any) -> str:
    if isinstance(item, list | tuple) and len(item) == 2:  # (tag, count)
        return f"{item[0]} ({item[1]})"
    if isinstance(item, dict) and "name" in item:  # a text encoder
        return f"{item['name']} at {item.get('prefix', '?')}"
    return _value(item)
