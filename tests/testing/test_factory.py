"""The model factory builds the real families, deterministically, small enough for tests."""

from __future__ import annotations

import pytest
import torch

from brushwork.core.kinds import BaseFamily
from brushwork.testing.factory import build_components, component_configs


@pytest.mark.parametrize("family", list(BaseFamily))
def test_same_seed_same_weights_other_seed_other_weights(family: BaseFamily) -> None:
    first = build_components(family, seed=3).state_dicts()
    again = build_components(family, seed=3).state_dicts()
    other = build_components(family, seed=4).state_dicts()
    for component, tensors in first.items():
        assert all(torch.equal(t, again[component][k]) for k, t in tensors.items())
    key = "conv_in.weight"
    assert not torch.equal(first["unet"][key], other["unet"][key])


def _unet_inputs(family: BaseFamily, context_dim: int) -> dict[str, object]:
    extra: dict[str, object] = {}
    if family is BaseFamily.SDXL:
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, 128),
            "time_ids": torch.randn(1, 6),
        }
    return {
        "sample": torch.randn(1, 4, 8, 8),
        "timestep": 500,
        "encoder_hidden_states": torch.randn(1, 77, context_dim),
        **extra,
    }


@pytest.mark.parametrize("family", list(BaseFamily))
def test_tiny_components_run_end_to_end(family: BaseFamily) -> None:
    components = build_components(family)
    hidden = [
        encoder(torch.tensor([[49406, 320, 2368, 49407]])).last_hidden_state
        for encoder in components.text_encoders.values()
    ]
    context_dim = sum(h.shape[-1] for h in hidden)
    assert context_dim == components.unet.config.cross_attention_dim
    with torch.no_grad():
        noise = components.unet(**_unet_inputs(family, context_dim)).sample
        image = components.vae.decode(noise).sample
    assert noise.shape == (1, 4, 8, 8) and torch.isfinite(noise).all()
    assert image.shape == (1, 3, 16, 16)


def test_full_size_configs_are_the_shipped_skeletons() -> None:
    configs = component_configs("sd1", "full")
    assert configs["unet"]["block_out_channels"] == [320, 640, 1280, 1280]
    assert set(component_configs("sdxl", "full")) == {
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
    }
    with pytest.raises(ValueError, match="tiny"):
        component_configs("sd1", "huge")
