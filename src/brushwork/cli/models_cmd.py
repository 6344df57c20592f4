"""`brushwork models ...`: list, show, convert and check the model library.

The lead registers `models_app` in cli/main.py. Settings come from `ctx.obj` when the main
app put a `Settings` there, else from the environment (`Settings()`).

Exit codes: 0 success (`list` also when some files are bad: they are listed as `invalid`);
1 an error (unknown or ambiguous model, bad option), or `doctor` found something to fix;
2 a model file that cannot be used (`convert` of an unsafe, corrupt or unsupported file).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from brushwork.cli.errors import EXIT_BAD_FILE, EXIT_FAILED
from brushwork.core.errors import BrushworkError, ModelFileError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.library.catalog import Library, hash_bytes_needed
from brushwork.library.convert import ConversionResult, convert_to_safetensors
from brushwork.library.doctor import DoctorReport, diagnose
from brushwork.library.entry import INVALID, ModelEntry
from brushwork.library.walk import display_name

models_app = typer.Typer(
    name="models",
    help="The model library: list, show, convert and check model files.",
    no_args_is_help=True,
)

PROGRESS_MIN_BYTES = 64 * 2**20  # show a progress bar only when this much is to be hashed


class KindChoice(StrEnum):
    CHECKPOINT = "checkpoint"
    VAE = "vae"
    LORA = "lora"
    EMBEDDING = "embedding"
    HYPERNETWORK = "hypernetwork"
    INVALID = INVALID


RootOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--root",
        help="A library root (A1111 or ComfyUI install, or a models folder); repeat for more. "
        "Default: Settings.roots, else ./models in a brushwork checkout, else the data dir.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _errors_exit() -> Iterator[None]:
    """Print a BrushworkError (what, where, what to do) on stderr and exit: 2 for a model file
    that cannot be used, 1 for any other error (the codes of `cli.errors`)."""
    try:
        yield
    except BrushworkError as error:
        _stderr().print(f"[bold red]error:[/] {escape(display_name(str(error)))}")
        code = EXIT_BAD_FILE if isinstance(error, ModelFileError) else EXIT_FAILED
        raise typer.Exit(code) from None


def hash_with_progress(
    library: Library, entries: Sequence[ModelEntry], console: Console
) -> list[ModelEntry]:
    """Hash `entries` (cached ones cost nothing), with a progress bar for large amounts."""
    total = sum(hash_bytes_needed(entry) for entry in entries)
    if total < PROGRESS_MIN_BYTES or not console.is_terminal:
        return library.hash_entries(entries)
    columns = (
        TextColumn("hashing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("hash", total=total)
        advance: Callable[[int], None] = lambda done: progress.advance(task, done)  # noqa: E731
        return library.hash_entries(entries, advance)


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _table(entries: Sequence[ModelEntry]) -> Table:
    """One row per file; problems are only flagged here (`!`) and spelled out below the table."""
    table = Table(show_lines=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("name", overflow="fold", ratio=1)
    for column in ("kind", "base", "size", "hash"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold", ratio=2)
    for entry in entries:
        kind = entry.kind_label
        table.add_row(
            "[red]![/]" if entry.problems else "",
            escape(display_name(entry.name)),
            f"[red]{kind}[/]" if entry.kind is None else kind,
            str(entry.base or "-"),
            _size(entry.size),
            entry.short_hash or "-",
            escape(entry.display_path),
        )
    return table


def _problem_lines(entries: Sequence[ModelEntry]) -> list[str]:
    return [
        f"[red]![/] {escape(entry.display_path)}: {escape(problem)}"
        for entry in entries
        for problem in entry.problems
    ]


@models_app.command("list")
def list_models(
    ctx: typer.Context,
    root: RootOption = None,
    kind: Annotated[
        KindChoice | None, typer.Option("--kind", help="Only models of this kind.")
    ] = None,
    compute_hashes: Annotated[
        bool, typer.Option("--hash", help="Compute SHA-256/AutoV2 (cached) for every model.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List every model file under the library roots, bad ones included (kind `invalid`)."""
    with _errors_exit(), Library.open(_settings(ctx), root or ()) as library:
        scan = library.scan()
        entries: Sequence[ModelEntry] = scan.of_kind({kind.value}) if kind else scan.entries
        if compute_hashes:
            entries = hash_with_progress(library, entries, _stderr())
    if as_json:
        print(json.dumps([entry.summary() for entry in entries], indent=2))
        return
    console = _stdout()
    if not entries:
        console.print(f"no model files under {', '.join(str(r) for r in library.roots)}")
        return
    console.print(_table(entries))
    for line in _problem_lines(entries):
        console.print(line, soft_wrap=False)
    invalid = sum(1 for entry in entries if entry.kind is None)
    console.print(f"{len(entries)} files, {invalid} invalid")


def _details_table(details: dict[str, Any]) -> Table:
    table = Table(show_header=False, pad_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in details.items():
        if value in (None, [], {}, ""):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        table.add_row(key, escape(display_name(text)))
    return table


@models_app.command("show")
def show_model(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name (file stem), alias, path or hash.")],
    root: RootOption = None,
    kind: Annotated[
        ModelKind | None, typer.Option("--kind", help="Look only among models of this kind.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Everything known about one model: identity, hashes, metadata, sidecars, problems."""
    with _errors_exit(), Library.open(_settings(ctx), root or ()) as library:
        entry = library.find(name, kind=kind)
        entry = hash_with_progress(library, [entry], _stderr())[0]
    if as_json:
        print(json.dumps(entry.details(), indent=2))
        return
    _stdout().print(_details_table(entry.details()))


def _conversion_lines(result: ConversionResult) -> list[str]:
    lines = [
        f"wrote {result.target} ({result.kind}, {result.tensor_count} tensors, "
        f"{_size(result.source_size)} -> {_size(result.target_size)})"
    ]
    if result.dropped:
        lines.append(f"pruned {len(result.dropped)} EMA/training tensors")
    if result.halved:
        lines.append(f"cast {result.halved} tensors to fp16")
    if result.kept_precision:
        lines.append(
            f"kept {len(result.kept_precision)} tensors in their precision (fp16 cannot hold "
            f"their values): {', '.join(result.kept_precision[:5])}"
        )
    return lines


class TargetFormat(StrEnum):
    SAFETENSORS = "safetensors"


@models_app.command("convert")
def convert_model(
    file: Annotated[Path, typer.Argument(help="A .ckpt/.pt/.bin (or .safetensors) model file.")],
    to: Annotated[TargetFormat, typer.Option("--to", help="Target format.")] = (
        TargetFormat.SAFETENSORS
    ),
    half: Annotated[bool, typer.Option("--half", help="Cast float tensors to fp16.")] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Drop EMA weights and training-only tensors.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing target.")] = False,
) -> None:
    """Convert a pickled model to safetensors beside it, safely (nothing in the pickle runs)."""
    with _errors_exit():
        result = convert_to_safetensors(file, half=half, prune=prune, overwrite=force)
    for line in _conversion_lines(result):
        _stdout().print(escape(display_name(line)))


def _print_report(report: DoctorReport, console: Console) -> None:
    for finding in report.findings:
        console.print(f"[bold]{finding.category}[/]: {escape(finding.message)}")
        for path in finding.paths:
            console.print(f"    {escape(path)}")
    verdict = "no problems found" if report.healthy else f"{len(report.findings)} findings"
    console.print(f"checked {report.checked} model files: {verdict}")


@models_app.command("doctor")
def doctor(ctx: typer.Context, root: RootOption = None, as_json: JsonOption = False) -> None:
    """Find invalid and misfiled files, duplicates, name clashes and orphaned sidecars."""
    with _errors_exit(), Library.open(_settings(ctx), root or ()) as library:
        scan = library.scan()
        hashed = hash_with_progress(library, scan.entries, _stderr())
        report = diagnose(replace(scan, entries=tuple(hashed)))
    if as_json:
        findings = [
            {"category": f.category, "message": f.message, "paths": list(f.paths)}
            for f in report.findings
        ]
        print(json.dumps({"checked": report.checked, "findings": findings}, indent=2))
    else:
        _print_report(report, _stdout())
    if not report.healthy:
        raise typer.Exit(1)
