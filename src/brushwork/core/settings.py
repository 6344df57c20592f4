"""Settings: built once by an entry point (CLI, server) and passed down; never a global."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def default_data_dir() -> Path:
    """Where brushwork keeps its library when none is given: `$BRUSHWORK_HOME`, else the user's
    data directory (`$XDG_DATA_HOME/brushwork`, `~/.local/share/brushwork`)."""
    explicit = os.environ.get("BRUSHWORK_HOME")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "brushwork"


class Settings(BaseModel):
    """Everything configurable about one brushwork process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    roots: tuple[Path, ...] = Field(
        default=(), description="model library roots (A1111 or ComfyUI layout)"
    )
    builtin_roots: tuple[Path, ...] = Field(
        default=(),
        description="read-only model roots shipped with brushwork (the demo model), listed "
        "after the user's roots; their checkpoints are the default only when the user has none",
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    device: str = "auto"
    precision: Precision = "auto"
    offline: bool = True
    compile_unet: bool = Field(
        default=False, description="compile the UNet (torch.compile; CUDA graphs on a GPU)"
    )
