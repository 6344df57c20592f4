"""How CLI commands turn brushwork errors into a message on stderr and an exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from brushwork.core.errors import BrushworkError, ModelFileError

EXIT_FAILED = 1  # a brushwork error that is not about one model file
EXIT_BAD_FILE = 2  # unreadable, unsafe, corrupt, or not a model


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Print a BrushworkError as one `error:` line on stderr and exit; never a traceback."""
    try:
        yield
    except ModelFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_FILE) from None
    except BrushworkError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
