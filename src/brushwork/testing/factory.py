"""Random-weight Stable Diffusion models of the real architectures, built from configs.

Tests use `tiny` models (each family's structure, scaled down so a forward pass takes
milliseconds); benchmarks use `full` models (the shipped skeletons: SD 1.5 / SD 2.x / SDXL size,
the same compute as the real thing). Nothing is downloaded. Weights come from a seeded generator,
so the same call builds the same model.

The tiny models keep each family's conventions that shapes cannot show, so architecture
inference works on them as on real files: SD1 UNets have 8 attention heads; SD2/SDXL UNets and
all CLIP text encoders have 64-channel heads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from brushwork.core.arch import skeleton_config, skeleton_dir, tokenizer_dir
from brushwork.core.kinds import BaseFamily
from brushwork.formats.architecture import ModelArchitecture, architecture_from_configs
from brushwork.formats.checkpoint import Checkpoint, components_to_checkpoint, write_checkpoint
from brushwork.formats.vae import write_vae

_TINY_TE = {
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
    "projection_dim": 64,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}

TINY_CONFIGS: dict[BaseFamily, dict[str, dict[str, Any]]] = {
    BaseFamily.SD1: {
        "unet": {
            "sample_size": 16,
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "attention_head_dim": 8,
            "cross_attention_dim": 64,
            "norm_num_groups": 32,
        },
        "text_encoder": _TINY_TE | {"hidden_act": "quick_gelu"},
    },
    BaseFamily.SD2: {
        "unet": {
            "sample_size": 16,
            "block_out_channels": [64, 128],
            "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "attention_head_dim": [1, 2],
            "cross_attention_dim": 64,
            "use_linear_projection": True,
            "norm_num_groups": 32,
        },
        "text_encoder": _TINY_TE | {"hidden_act": "gelu"},
    },
    BaseFamily.SDXL: {
        "unet": {
            "sample_size": 16,
            "block_out_channels": [64, 128],
            "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2],
            "attention_head_dim": [1, 2],
            "cross_attention_dim": 192,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 128 + 6 * 8,
            "norm_num_groups": 32,
        },
        "text_encoder": _TINY_TE | {"hidden_act": "quick_gelu"},
        "text_encoder_2": _TINY_TE
        | {
            "hidden_act": "gelu",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_attention_heads": 2,
            "projection_dim": 128,
        },
    },
}
TINY_VAE: dict[str, Any] = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
}

_SKELETON = {BaseFamily.SD1: "sd1", BaseFamily.SD2: "sd2", BaseFamily.SDXL: "sdxl"}


@dataclass
class Components:
    """The modules of one model, as diffusers/transformers objects."""

    family: BaseFamily
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: dict[str, CLIPTextModel | CLIPTextModelWithProjection]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Each component's diffusers/transformers state dict, by component name."""
        out = {"unet": self.unet.state_dict(), "vae": self.vae.state_dict()}
        for name, encoder in self.text_encoders.items():
            out[name] = encoder.state_dict()
        return out


def component_configs(family: BaseFamily | str, size: str = "tiny") -> dict[str, dict[str, Any]]:
    """Configs of every component: `tiny` (test) or `full` (the shipped skeleton's)."""
    family = BaseFamily(family)
    if size == "full":
        skeleton = _SKELETON[family]
        names = ["unet", "vae", "text_encoder"] + (
            ["text_encoder_2"] if family is BaseFamily.SDXL else []
        )
        return {name: skeleton_config(skeleton, name) for name in names}
    if size != "tiny":
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    vae = TINY_VAE | ({"scaling_factor": 0.13025} if family is BaseFamily.SDXL else {})
    return {name: dict(cfg) for name, cfg in TINY_CONFIGS[family].items()} | {"vae": vae}


def _seeded_init(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter from a seeded generator (norm weights near 1, others small)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                param.copy_(0.02 * noise)
            else:
                fan_in = param[0].numel() if param.dim() > 1 else param.numel()
                param.copy_(noise / max(fan_in, 1) ** 0.5)


def build_text_encoder(config: dict[str, Any], *, with_projection: bool = False) -> CLIPTextModel:
    clip_config = CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"})
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(clip_config).eval()


def build_components(
    family: BaseFamily | str = BaseFamily.SD1,
    *,
    size: str = "tiny",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    random_init: bool = True,
) -> Components:
    """Build all modules of one model with seeded random weights."""
    family = BaseFamily(family)
    configs = component_configs(family, size)
    unet = UNet2DConditionModel.from_config(configs["unet"]).eval()
    vae = AutoencoderKL.from_config(configs["vae"]).eval()
    encoders: dict[str, Any] = {"text_encoder": build_text_encoder(configs["text_encoder"])}
    if "text_encoder_2" in configs:
        encoders["text_encoder_2"] = build_text_encoder(
            configs["text_encoder_2"], with_projection=True
        )
    if random_init:
        for offset, module in enumerate([unet, vae, *encoders.values()]):
            _seeded_init(module, seed * 101 + offset)
    if dtype != torch.float32:
        for module in [unet, vae, *encoders.values()]:
            module.to(dtype)
    return Components(family, unet, vae, encoders, configs)


def tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """The shipped CLIP BPE tokenizer (49,408 entries), offline."""
    return CLIPTokenizer.from_pretrained(str(tokenizer_dir()), model_max_length=model_max_length)


# ---------------------------------------------------------------------------------------------
# files and config folders for format tests (added with formats/checkpoint.py and formats/vae.py)


def build_meta_components(family: BaseFamily | str = BaseFamily.SD1) -> Components:
    """Full-size (skeleton) modules on the `meta` device: every key and shape, no memory, no init."""
    family = BaseFamily(family)
    configs = component_configs(family, "full")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        encoders: dict[str, Any] = {"text_encoder": build_text_encoder(configs["text_encoder"])}
        if "text_encoder_2" in configs:
            encoders["text_encoder_2"] = build_text_encoder(
                configs["text_encoder_2"], with_projection=True
            )
    return Components(family, unet, vae, encoders, configs)


def components_architecture(
    components: Components, *, prediction_type: str = "epsilon"
) -> ModelArchitecture:
    """The `formats.architecture.ModelArchitecture` of built components."""
    return architecture_from_configs(
        components.family,
        components.unet.config,
        components.vae.config,
        {name: encoder.config for name, encoder in components.text_encoders.items()},
        prediction_type=prediction_type,
    )


def components_checkpoint(
    components: Components, *, prediction_type: str = "epsilon"
) -> Checkpoint:
    """The components as a `formats.checkpoint.Checkpoint` (weights shared, not copied)."""
    sds = components.state_dicts()
    return components_to_checkpoint(
        sds["unet"],
        sds["vae"],
        {name: sds[name] for name in components.text_encoders},
        components_architecture(components, prediction_type=prediction_type),
    )


def write_checkpoint_file(
    components: Components,
    path: Path | str,
    *,
    prediction_type: str = "epsilon",
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the components as an A1111/LDM single-file checkpoint (format from the suffix)."""
    path = Path(path)
    checkpoint = components_checkpoint(components, prediction_type=prediction_type)
    write_checkpoint(path, checkpoint, dtype=dtype, overwrite=True)
    return path


def write_vae_file(
    components: Components, path: Path | str, *, dtype: torch.dtype | None = None
) -> Path:
    """Write the components' VAE as an A1111 standalone VAE file (format from the suffix)."""
    path = Path(path)
    write_vae(
        path, components.vae.state_dict(), dict(components.vae.config), dtype=dtype, overwrite=True
    )
    return path


def diffusers_config_folder(
    components: Components, dest: Path | str, *, prediction_type: str = "epsilon"
) -> Path:
    """A diffusers-layout folder of configs + tokenizer(s), no weights, for
    `from_single_file(path, config=dest)` of a file written from these components."""
    dest = Path(dest)
    skeleton = _SKELETON[components.family]
    index = json.loads((skeleton_dir(skeleton) / "model_index.json").read_text(encoding="utf-8"))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    components.unet.save_config(dest / "unet")
    components.vae.save_config(dest / "vae")
    scheduler = skeleton_config(skeleton, "scheduler") | {"prediction_type": prediction_type}
    (dest / "scheduler").mkdir(exist_ok=True)
    (dest / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(scheduler), encoding="utf-8"
    )
    for name, encoder in components.text_encoders.items():
        encoder.config.save_pretrained(dest / name)
        tokenizer().save_pretrained(dest / name.replace("text_encoder", "tokenizer"))
    return dest
