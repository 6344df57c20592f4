"""kohya's default LoRA targets, counted on the real SD 1.5 architecture (meta tensors)."""

from __future__ import annotations

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.testing.factory import build_components, build_meta_components
from brushwork.training.lora_network import (
    LoraAdapters,
    NetworkShape,
    text_encoder_targets,
    unet_targets,
)


def test_sd15_module_counts_match_kohya_logs() -> None:
    meta = build_meta_components("sd1")
    unet = unet_targets(meta.unet, NetworkShape())
    text = text_encoder_targets(meta.text_encoders["text_encoder"])
    assert (len(text.plain), len(unet.plain), len(unet.conv3x3)) == (72, 192, 0)
    locon = unet_targets(meta.unet, NetworkShape(conv_dim=4))
    assert len(locon.plain) + len(locon.conv3x3) == 278  # training.md 1.1: LoCon SD 1.5
    assert len(locon.conv3x3) == 50
    assert "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj" in unet.plain
    assert "encoder.layers.11.mlp.fc2" in text.plain


def test_adapters_start_at_the_base_model_and_round_trip_their_state() -> None:
    components = build_components("sd1")
    unet = components.unet
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = unet(sample, 10, encoder_hidden_states=context).sample
    adapters = LoraAdapters.inject({"unet": unet}, NetworkShape(dim=2, alpha=1))
    with torch.no_grad():
        assert torch.equal(unet(sample, 10, encoder_hidden_states=context).sample, before)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert len(trainable) == len(adapters.named_parameters()) == 2 * 48
    state = {k: torch.full_like(v, 0.5) for k, v in adapters.state_tensors().items()}
    adapters.load_state_tensors(state)
    assert all(torch.equal(v, state[k]) for k, v in adapters.state_tensors().items())
    with pytest.raises(ConfigError, match="does not fit"):
        adapters.load_state_tensors(dict(list(state.items())[:3]))


def test_network_shape_rules() -> None:
    assert NetworkShape(dim=8, alpha=0).effective_alpha == 8.0  # alpha 0 means alpha = dim
    assert NetworkShape(conv_dim=4).effective_conv_alpha == 1.0  # sd-scripts' default
    with pytest.raises(ConfigError, match="conv_alpha is set but conv_dim is not"):
        NetworkShape(conv_alpha=2)
