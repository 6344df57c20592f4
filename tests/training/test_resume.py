"""An interrupted run resumed from its state folder ends exactly like an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.formats.safeio import read_model_file
from brushwork.training.engine import Hooks
from brushwork.training.lora import train_lora

from .conftest import lora_config, make_image_folder

# randomness from every source: dropout (global RNG), noise offset, cosine lr; 5 images x 2
# repeats in batches of 2 = 5 batches per epoch; accumulation 2 -> 3 steps per epoch (the last
# window is a single batch), so step 4 starts epoch 2.
OPTIONS = {
    "max_train_steps": 5,
    "save_every_n_steps": 2,
    "save_state": True,
    "gradient_accumulation_steps": 2,
    "network_dropout": 0.2,
    "noise_offset": 0.1,
    "lr_scheduler": "cosine",
    "lr_warmup_steps": 1,
}


class InterruptedRunError(Exception):
    pass


def _stop_after(step: int) -> Hooks:
    def after_step(done: int) -> None:
        if done == step:
            raise InterruptedRunError

    return Hooks(after_step=after_step)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return dict(read_model_file(path).tensors)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("resume") / "data", count=5)


def test_resumed_run_matches_uninterrupted_bit_for_bit(
    tiny_checkpoint: Path, data: Path, tmp_path: Path
) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_lora(lora_config(tiny_checkpoint, data, whole, **OPTIONS), tiny_checkpoint)

    with pytest.raises(InterruptedRunError):  # killed after step 3; the last state is step 2's
        train_lora(
            lora_config(tiny_checkpoint, data, parts, **OPTIONS),
            tiny_checkpoint,
            hooks=_stop_after(3),
        )
    assert not (parts / "tiny.safetensors").exists()
    state = parts / "tiny-step00000002-state"
    resumed = lora_config(tiny_checkpoint, data, parts, resume=str(state), **OPTIONS)
    outcome = train_lora(resumed, tiny_checkpoint)

    assert outcome.result.steps == 5
    expected, got = _tensors(whole / "tiny.safetensors"), _tensors(parts / "tiny.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    for name in ("tiny-step00000004.safetensors",):
        a, b = _tensors(whole / name), _tensors(parts / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert (parts / "tiny-loss.csv").read_text() == (whole / "tiny-loss.csv").read_text()


def test_resume_refuses_a_run_with_other_step_arithmetic(
    tiny_checkpoint: Path, data: Path, tmp_path: Path
) -> None:
    options = OPTIONS | {"max_train_steps": 2}
    train_lora(lora_config(tiny_checkpoint, data, tmp_path, **options), tiny_checkpoint)
    state = tmp_path / "tiny-state"
    changed = options | {"max_train_steps": 7, "train_batch_size": 1}
    with pytest.raises(ConfigError, match=r"max_train_steps \(saved 2, now 7\)") as caught:
        train_lora(
            lora_config(tiny_checkpoint, data, tmp_path, resume=str(state), **changed),
            tiny_checkpoint,
        )
    assert "train_batch_size" in str(caught.value)


def test_resume_refuses_an_incomplete_state_folder(
    tiny_checkpoint: Path, data: Path, tmp_path: Path
) -> None:
    options = OPTIONS | {"max_train_steps": 1}
    train_lora(lora_config(tiny_checkpoint, data, tmp_path, **options), tiny_checkpoint)
    state = tmp_path / "tiny-state"
    (state / "train_state.json").unlink()  # as if killed while saving
    with pytest.raises(ConfigError, match="not a complete training state"):
        train_lora(
            lora_config(tiny_checkpoint, data, tmp_path, resume=str(state), **options),
            tiny_checkpoint,
        )
