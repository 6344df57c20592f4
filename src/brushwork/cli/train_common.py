"""What every `brushwork train ...` command shares: options from a TOML, flags and `--set`, the
base model by file or library name, previews built with `brushwork.generation`, the progress
bar, logging, and the lines printed at the end of a run."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.training.config_file import ConfigSource, read_config_toml, sort_options
from brushwork.training.engine import Hooks, TrainingResult
from brushwork.training.logs import TrainingProgress

# option types shared by the commands
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="A flat TOML (sd-scripts / A1111 option names).")
]
BaseOption = Annotated[str | None, typer.Option(help="Base checkpoint: a file or a library name.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Any other option: KEY=VALUE (TOML value).")
]
RootOption = Annotated[
    list[Path] | None, typer.Option("--root", help="Library root for a model name.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Check the options, print them and stop.")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]
ResumeOption = Annotated[Path | None, typer.Option(help="A '...-state' folder to continue from.")]
SamplePromptsOption = Annotated[
    Path | None, typer.Option(help="Preview prompts (kohya .txt syntax).")
]


def console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


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


def option_sources(
    config: Path | None,
    flags: Mapping[str, Any],
    flag_options: Mapping[str, str],
    set_options: list[str] | None,
    *,
    known: Collection[str],
) -> list[ConfigSource]:
    """The TOML, then the flags (renamed by `flag_options`, unset ones left out), then `--set`:
    later sources win when they are resolved."""
    sources: list[ConfigSource] = []
    if config is not None:
        sources.append(read_config_toml(config, known=known))
    values = {
        flag_options[name]: (str(value) if isinstance(value, Path) else value)
        for name, value in flags.items()
        if name in flag_options and value is not None
    }
    sources.append(sort_options(values, origin="command line", known=known))
    sources.append(sort_options(parse_set_options(set_options or []), origin="--set", known=known))
    return sources


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def resolve_base_model(name: str, settings: Settings, roots: list[Path]) -> Path:
    """A checkpoint file path, or a library name/alias/hash looked up in the library."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from brushwork.library.catalog import Library

    with Library.open(settings, roots) as library:
        return library.find(name, kind=ModelKind.CHECKPOINT).path


def generate_images(generator: Any, request: Any, **extra: Any) -> list[Any]:
    """Images of one preview request, each with its A1111 infotext in `info["parameters"]`."""
    from brushwork.generation.previews import preview_images

    images: list[Any] = preview_images(generator, request, **extra)
    return images


def generation_available(out: Console) -> bool:
    try:
        import brushwork.generation  # noqa: F401
    except ImportError as exc:
        out.print(f"warning: previews are off: brushwork.generation is not available ({exc})")
        return False
    return True


def preview_factory(out: Console) -> Any:
    """A factory that builds previews with `brushwork.generation`, or None with a warning."""
    if not generation_available(out):
        return None

    def factory(model: Any) -> Any:
        from brushwork.generation import Generator

        generator = Generator(model)
        return lambda request: generate_images(generator, request)

    return factory


@contextmanager
def progress_bar(out: Console) -> Iterator[Hooks]:
    """Engine hooks that draw a rich progress bar (epoch, steps, loss, speed, time left)."""
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} it/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out, transient=False) as progress:
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


def configure_logging(verbose: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("brushwork").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("accelerate", "diffusers", "transformers", "peft"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_warnings(out: Console, warnings: Collection[str]) -> None:
    for message in warnings:
        out.print(f"warning: {message}")


def report_run(result: TrainingResult, config_file: Path) -> None:
    """The files a run wrote, on stdout (one per line, for scripts), after where a run that
    continued a file started from."""
    if result.start_step:
        typer.echo(f"continued from step {result.start_step} to step {result.steps}")
    for path in result.saved_files:
        typer.echo(f"saved {path}")
    typer.echo(f"configuration: {config_file}")
    typer.echo(f"loss log: {result.log_csv}")
