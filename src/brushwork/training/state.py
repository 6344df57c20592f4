"""Training state folders (`--save_state` / `--resume`), written so a crash never leaves a
plausible half-written one.

A state folder holds accelerate's `save_state` output (optimiser, scheduler, GradScaler and every
process's RNG states; the frozen base model is not saved: a hook drops it), plus ours:
`trainable.safetensors` (the trained weights), `log.csv` (the loss records so far),
`data.json` (the data order) and `train_state.json` (where the run stands; written last, so its
presence marks a complete folder). Everything is written into `<name>.tmp/`, then renamed into
place; an older folder of the same name is replaced only after the new one is complete.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.formats import safeio

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
TRAINABLE_FILE = "trainable.safetensors"
LOG_FILE = "log.csv"
DATA_FILE = "data.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class TrainPosition:
    """Where a run stands after an optimiser step."""

    epoch: int  # 0-based epoch to continue in
    batches_done: int  # this epoch's batches already used, per process
    step: int  # optimiser steps done
    total_steps: int
    fingerprint: dict[str, Any] = field(default_factory=dict)  # options a resume must keep


@dataclass(frozen=True)
class SavedState:
    position: TrainPosition
    trainable: dict[str, torch.Tensor]
    log_csv: str
    data: dict[str, Any]


def state_folder_for(model_file: Path) -> Path:
    """sd-scripts' naming: `<model file stem>-state` beside the model file."""
    return model_file.with_name(f"{model_file.stem}-state")


def write_state_files(
    folder: Path,
    position: TrainPosition,
    trainable: dict[str, torch.Tensor],
    log_csv: str,
    data: dict[str, Any],
) -> None:
    """Our files in a (temporary) state folder; `train_state.json` last."""
    safeio.write_safetensors(
        folder / TRAINABLE_FILE, {k: v.detach().cpu() for k, v in trainable.items()}
    )
    atomic_write_bytes(folder / LOG_FILE, log_csv.encode("utf-8"))
    atomic_write_bytes(folder / DATA_FILE, json.dumps(data, indent=1).encode("utf-8"))
    payload = {"version": STATE_VERSION, **asdict(position)}
    atomic_write_bytes(folder / STATE_FILE, json.dumps(payload, indent=1).encode("utf-8"))


def staging_folder(folder: Path) -> Path:
    return folder.with_name(folder.name + ".tmp")


def clear_staging(folder: Path) -> Path:
    staging = staging_folder(folder)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish_staging(folder: Path) -> None:
    """Move the complete staging folder into place (the previous one goes only afterwards)."""
    staging = staging_folder(folder)
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    _fsync_folder(folder.parent)
    if old.exists():
        shutil.rmtree(old)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_state(folder: Path) -> SavedState:
    """A complete state folder, or a ConfigError that says what is wrong with it."""
    marker = folder / STATE_FILE
    if not folder.is_dir():
        raise ConfigError(f"resume: {folder} is not a folder", hint="give a `...-state` folder")
    if not marker.is_file():
        raise ConfigError(
            f"resume: {folder} is not a complete training state (no {STATE_FILE})",
            hint="it was interrupted while saving; resume from an older state folder",
        )
    try:
        raw = json.loads(marker.read_text(encoding="utf-8"))
        version = raw.pop("version")
        position = TrainPosition(**raw)
        data = json.loads((folder / DATA_FILE).read_text(encoding="utf-8"))
        log_csv = (folder / LOG_FILE).read_text(encoding="utf-8")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"resume: {folder} holds an unreadable training state ({exc})") from None
    if version != STATE_VERSION:
        raise ConfigError(f"resume: {folder} has state version {version}; expected {STATE_VERSION}")
    trainable = safeio.read_model_file(folder / TRAINABLE_FILE).tensors
    return SavedState(position, dict(trainable), log_csv, data)


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], folder: Path) -> None:
    """Refuse a resume whose step arithmetic or network would differ from the saved run's."""
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if changed:
        details = ", ".join(
            f"{k} (saved {saved.get(k)!r}, now {current.get(k)!r})" for k in changed
        )
        raise ConfigError(
            f"resume: {folder} was saved by a run with different options: {details}",
            hint="resume with the options of the saved run",
        )


@dataclass(frozen=True)
class RngSnapshot:
    """Python, NumPy and torch RNG states (what accelerate restores), to put back later."""

    python: Any
    numpy: Any
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> RngSnapshot:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch_cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
