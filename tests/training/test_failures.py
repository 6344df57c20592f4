"""Long runs fail safely: a NaN loss stops training with the last good save kept, and a crash
while saving leaves the files saved before intact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from brushwork.core import fsutil
from brushwork.core.errors import BrushworkError
from brushwork.formats.lora import read_lora
from brushwork.training.engine import TrainingDivergedError
from brushwork.training.lora import LoraMethod, train_lora
from brushwork.training.state import read_state

from .conftest import lora_config


def test_nan_loss_stops_training_and_keeps_the_last_good_save(
    tiny_checkpoint: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_loss = LoraMethod.loss
    calls = {"n": 0}

    def loss(self: LoraMethod, batch: Any, generator: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        value = real_loss(self, batch, generator)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(LoraMethod, "loss", loss)
    config = lora_config(tiny_checkpoint, image_folder, tmp_path, save_every_n_steps=1)
    with pytest.raises(TrainingDivergedError) as caught:
        train_lora(config, tiny_checkpoint)

    message = str(caught.value)
    assert "the loss became nan at step 3" in message
    assert f"the last good save is {tmp_path / 'tiny-step00000002.safetensors'}" in message
    assert "lower unet_lr (now 0.001)" in message and "text_encoder_lr" in message
    assert not (tmp_path / "tiny.safetensors").exists()
    assert not (tmp_path / "tiny-step00000003.safetensors").exists()
    network = read_lora(tmp_path / "tiny-step00000002.safetensors")
    assert all(torch.isfinite(m.parts["up"]).all() for m in network.modules.values())
    rows = (tmp_path / "tiny-loss.csv").read_text().splitlines()
    assert len(rows) == 3  # header + the two good steps


def test_exploding_weights_stop_before_anything_bad_is_saved(
    tiny_checkpoint: Path, image_folder: Path, tmp_path: Path
) -> None:
    config = lora_config(
        tiny_checkpoint, image_folder, tmp_path, learning_rate=1e30, network_train_unet_only=True
    )
    with pytest.raises(TrainingDivergedError, match=r"at step 2 .*nothing was saved yet") as caught:
        train_lora(config, tiny_checkpoint)
    assert caught.value.hint is not None and "lower unet_lr (now 1e+30)" in caught.value.hint
    assert not list(tmp_path.glob("*.safetensors"))


def _fail_writing(monkeypatch: pytest.MonkeyPatch, target_name: str) -> None:
    """Make the atomic write of `target_name` die half-way (disk full)."""
    real_mkstemp, real_fdopen = fsutil.tempfile.mkstemp, os.fdopen
    current: dict[str, str] = {}

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        current[str(fd)] = name
        return fd, name

    class HalfWriter:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        name = Path(current.get(str(fd), "")).name
        return HalfWriter(handle) if name.startswith(f".{target_name}.") else handle

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(fsutil.os, "fdopen", fdopen)


def test_crash_while_saving_leaves_previous_files_intact(
    tiny_checkpoint: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"max_train_steps": 2, "save_state": True}
    train_lora(lora_config(tiny_checkpoint, image_folder, tmp_path, **options), tiny_checkpoint)
    model_bytes = (tmp_path / "tiny.safetensors").read_bytes()
    state_bytes = (tmp_path / "tiny-state" / "trainable.safetensors").read_bytes()

    with monkeypatch.context() as patch:  # a second run dies while writing the model file
        _fail_writing(patch, "tiny.safetensors")
        with pytest.raises(BrushworkError, match=r"could not save .*No space left"):
            train_lora(
                lora_config(tiny_checkpoint, image_folder, tmp_path, seed=8, **options),
                tiny_checkpoint,
            )
    assert (tmp_path / "tiny.safetensors").read_bytes() == model_bytes
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p.is_file()]

    with monkeypatch.context() as patch:  # a third dies while writing the state folder
        _fail_writing(patch, "train_state.json")
        with pytest.raises(BrushworkError, match=r"could not save .*tiny-state"):
            train_lora(
                lora_config(tiny_checkpoint, image_folder, tmp_path, seed=9, **options),
                tiny_checkpoint,
            )
    assert (tmp_path / "tiny-state" / "trainable.safetensors").read_bytes() == state_bytes
    assert read_state(tmp_path / "tiny-state").position.step == 2
