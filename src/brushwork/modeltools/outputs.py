"""Checks every tool makes before it writes, and the files that go beside an output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.formats.checkpoint import file_format_for
from brushwork.modeltools.common import ModelInput


def check_output(output: Path, inputs: Sequence[ModelInput | None], *, overwrite: bool) -> None:
    """Refuse an output that is one of the inputs (never, even with `overwrite`), that exists
    (unless `overwrite`), or whose suffix says no known format."""
    file_format_for(output)
    target = output.resolve()
    for model in inputs:
        if model is not None and model.path.resolve() == target:
            raise ConfigError(
                f"the output {output} is one of the inputs; inputs are never overwritten",
                hint="choose another name",
            )
    if output.exists() and not overwrite:
        raise ConfigError(f"{output} already exists", hint="choose another name, or overwrite")


def copy_config(model: Path, output: Path) -> Path | None:
    """A model's `<stem>.yaml` config copied beside the output (A1111's "copy config from A")."""
    source = model.with_suffix(".yaml")
    if not source.is_file():
        return None
    target = output.with_suffix(".yaml")
    atomic_write_bytes(target, source.read_bytes(), overwrite=True)
    return target
