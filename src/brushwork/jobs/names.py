"""How a client names models: library names only, never places on disk.

`refuse_path_like` is the one check every name field passes (options, training, grid axes);
`checkpoint_title` is A1111's checkpoint title (``name.safetensors [hash]``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from brushwork.core.errors import ConfigError

if TYPE_CHECKING:
    from brushwork.library.entry import ModelEntry

_DRIVE = re.compile(r"^[A-Za-z]:")


def refuse_path_like(field_name: str, name: str) -> None:
    """A model name must name a library entry, never a place on disk: refuse traversal."""
    parts = name.replace("\\", "/").split("/")
    if "\x00" in name or ".." in parts or name.startswith(("/", "~")) or _DRIVE.match(name):
        raise ConfigError(
            f"{field_name}: {name!r} looks like a file path; give a model name from the library"
        )


def checkpoint_title(entry: ModelEntry) -> str:
    """A1111's title: the path in the checkpoint folder, and ``[short hash]`` once hashed."""
    inside = entry.relative_path
    if entry.folder and inside.startswith(entry.folder + "/"):
        inside = inside[len(entry.folder) + 1 :]
    return f"{inside} [{entry.autov2}]" if entry.autov2 else inside
