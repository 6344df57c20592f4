"""The full fine-tune method (training/finetune.py): what trains, for how long, and what is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator

from brushwork.demo.dataset import write_dataset
from brushwork.loading import LoadedModel, load_model
from brushwork.testing.factory import build_components, write_checkpoint_file
from brushwork.training.engine import LoopSettings, Trainer
from brushwork.training.finetune import FullModelMethod, save_full_checkpoint
from brushwork.training.objective import ObjectiveSettings
from brushwork.training.optim import build_scheduler, choose_optimizer
from brushwork.training.scratch_data import InMemoryImageSet
from brushwork.training.text import CaptionEncoder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "base.safetensors"
    return write_checkpoint_file(build_components("sd1", seed=3), path)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pics")
    write_dataset(root, ("circle",), 4, seed=2, size=32, repeats=1, name="c")
    return root


def _method(model: LoadedModel, **options: Any) -> FullModelMethod:
    encoder = model.text_encoders["text_encoder"]
    captions = CaptionEncoder(
        model.tokenizers["text_encoder"],
        encoder,
        final_layer_norm=encoder.get_submodule("final_layer_norm"),
    )
    return FullModelMethod(model, captions, ObjectiveSettings(), **options)


def _train(method: FullModelMethod, pictures: Path, out: Path, steps: int) -> Path:
    data = InMemoryImageSet(pictures, 32, 2, seed=0)
    settings = LoopSettings(
        output_dir=out,
        output_name="tuned",
        file_suffix=".safetensors",
        total_steps=steps,
        total_epochs=100,
        seed=0,
    )

    def schedule(optimizer: torch.optim.Optimizer, total: int) -> Any:
        return build_scheduler("constant", optimizer, total_steps=total)

    trainer = Trainer(
        method, data, settings, Accelerator(cpu=True), choose_optimizer("AdamW"), schedule
    )
    return trainer.run().final_file


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_text_encoder_trains_only_for_its_steps(
    checkpoint: Path, pictures: Path, tmp_path: Path
) -> None:
    model = load_model(checkpoint, device="cpu", precision="fp32")
    encoder = model.text_encoders["text_encoder"]
    te_before, unet_before = _snapshot(encoder), _snapshot(model.unet)
    seen: list[dict[str, torch.Tensor]] = []
    method = _method(
        model, learning_rates={"unet": 1e-3, "text_encoder": 1e-3}, text_encoder_steps=1
    )
    original_end = method.end_step

    def record(step: int) -> None:
        original_end(step)
        seen.append(_snapshot(encoder))

    method.end_step = record  # type: ignore[method-assign]
    _train(method, pictures, tmp_path, steps=3)
    changed = [k for k in te_before if not torch.equal(te_before[k], seen[0][k])]
    assert changed, "the text encoder did not train in its first step"
    for key in te_before:  # frozen after step 1: steps 2 and 3 leave it alone
        assert torch.equal(seen[0][key], seen[2][key]), key
    assert not torch.equal(unet_before["conv_in.weight"], model.unet.conv_in.weight)
    assert model.vae.decoder.conv_out.weight.requires_grad is False


def test_without_a_text_encoder_rate_only_the_unet_changes(
    checkpoint: Path, pictures: Path, tmp_path: Path
) -> None:
    model = load_model(checkpoint, device="cpu", precision="fp32")
    te_before, vae_before = _snapshot(model.text_encoders["text_encoder"]), _snapshot(model.vae)
    saved = _train(_method(model, learning_rates={"unet": 1e-3}), pictures, tmp_path, steps=2)
    for key, value in model.text_encoders["text_encoder"].state_dict().items():
        assert torch.equal(te_before[key], value), key
    for key, value in model.vae.state_dict().items():
        assert torch.equal(vae_before[key], value), key
    reloaded = load_model(saved, device="cpu", precision="fp32")
    assert torch.equal(reloaded.unet.conv_in.weight, model.unet.conv_in.weight)


def test_with_ema_the_file_holds_the_averaged_unet(
    checkpoint: Path, pictures: Path, tmp_path: Path
) -> None:
    model = load_model(checkpoint, device="cpu", precision="fp32")
    start = model.unet.conv_in.weight.detach().clone()
    method = _method(model, learning_rates={"unet": 1e-2}, ema_decay=0.9)
    saved = _train(method, pictures, tmp_path, steps=3)
    assert method.ema is not None and method.ema.updates == 3
    reloaded = load_model(saved, device="cpu", precision="fp32")
    averaged = method.ema.shadow["conv_in.weight"]
    assert torch.equal(reloaded.unet.conv_in.weight, averaged)
    last = model.unet.conv_in.weight.detach()
    assert not torch.equal(averaged, last)
    # the average lies between the start and the last weights (it lags behind training)
    assert (averaged - last).abs().mean() < (start - last).abs().mean()


def test_save_full_checkpoint_round_trips_in_fp16(checkpoint: Path, tmp_path: Path) -> None:
    model = load_model(checkpoint, device="cpu", precision="fp32")
    path = save_full_checkpoint(
        model, tmp_path / "copy.safetensors", dtype=torch.float16, metadata={"a": "b"}
    )
    copy = load_model(path, device="cpu", precision="fp32")
    for name, module in model.modules().items():
        theirs = copy.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                assert torch.equal(theirs[key], value.half().float()), (name, key)
