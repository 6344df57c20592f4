"""Hypernetwork training on a tiny SD1 model: A1111 file, frozen UNet, effect, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from brushwork.formats.hypernetwork import read_hypernetwork
from brushwork.loading import load_model
from brushwork.patching.hypernetwork import HypernetworkApplication, apply_hypernetworks
from brushwork.training.hypernetwork import HypernetworkTrainingConfig, train_hypernetwork
from brushwork.training.template_training import resolve_options

from .test_textual_inversion import fingerprint, flat_image_folder


def hn_config(base: Path, data: Path, output: Path, **options: Any) -> HypernetworkTrainingConfig:
    values: dict[str, Any] = {
        "pretrained_model_name_or_path": str(base),
        "train_data_dir": str(data),
        "output_dir": str(output),
        "output_name": "grain",
        "resolution": 64,
        "train_batch_size": 2,
        "max_train_steps": 4,
        "learning_rate": "1e-3",
        "save_every_n_steps": 2,
        "layer_structure": "1, 2, 1",
        "activation_func": "relu",
        "is_layer_norm": True,
        "seed": 5,
    }
    config, _ = resolve_options(HypernetworkTrainingConfig, values | options)
    return config


def unet_output(model: Any, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, 8, 8, generator=gen)
    width = model.unet.config.cross_attention_dim
    context = torch.randn(1, 77, width, generator=gen)
    with torch.no_grad():
        out: torch.Tensor = model.unet(
            sample, torch.tensor([500]), encoder_hidden_states=context
        ).sample
    return out


def test_trains_a1111_hypernetwork_with_the_unet_frozen(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    model = load_model(tiny_checkpoint, device="cpu", precision="fp32", vae="none")
    for module in model.modules().values():
        module.requires_grad_(False)
    context_width = model.unet.config.cross_attention_dim
    before = fingerprint(model)
    base_out = unet_output(model)
    outcome = train_hypernetwork(
        hn_config(tiny_checkpoint, data, tmp_path / "out"), tiny_checkpoint, model=model
    )
    assert fingerprint(model) == before
    assert torch.equal(unet_output(model), base_out)  # wrappers removed

    assert [p.name for p in outcome.result.saved_files] == ["grain-2.pt", "grain.pt"]
    hn = read_hypernetwork(tmp_path / "out" / "grain.pt")
    assert hn.step == 4 and read_hypernetwork(tmp_path / "out" / "grain-2.pt").step == 2
    assert hn.layer_structure == [1.0, 2.0, 1.0] and hn.activation_func == "relu"
    assert hn.is_layer_norm and hn.sd_checkpoint is not None
    assert hn.sd_checkpoint_name == tiny_checkpoint.stem
    assert context_width in hn.widths
    with apply_hypernetworks(model.unet, [HypernetworkApplication(hn, 1.0)]) as report:
        assert report.attentions["grain"] > 0
        changed = unet_output(model)
    assert not torch.allclose(changed, base_out)


def test_hypernetwork_resume_matches_one_run(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = flat_image_folder(tmp_path / "data")
    whole = train_hypernetwork(hn_config(tiny_checkpoint, data, tmp_path / "a"), tiny_checkpoint)
    train_hypernetwork(
        hn_config(tiny_checkpoint, data, tmp_path / "b", save_state=True), tiny_checkpoint
    )
    resumed = train_hypernetwork(
        hn_config(tiny_checkpoint, data, tmp_path / "c", resume=tmp_path / "b" / "grain-2-state"),
        tiny_checkpoint,
    )
    one = read_hypernetwork(whole.result.final_file)
    two = read_hypernetwork(resumed.result.final_file)
    for width, (k, v) in one.layers.items():
        for key in k:
            assert torch.allclose(k[key], two.layers[width][0][key], atol=1e-6)
            assert torch.allclose(v[key], two.layers[width][1][key], atol=1e-6)
