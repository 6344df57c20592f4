"""Write the config skeletons (JSON only, no weights) that brushwork ships for each architecture.

Each skeleton is a diffusers-layout folder of configs: `model_index.json`, `unet/config.json`,
`vae/config.json`, `text_encoder[_2]/config.json`, `scheduler/scheduler_config.json`. The values
are the published hyper-parameters of SD 1.5, SD 2.x (512 epsilon and 768 v-prediction) and SDXL
base 1.0; the diffusers/transformers classes fill in every default so the files are complete.

    python scripts/make_skeletons.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig

OUT = Path(__file__).resolve().parents[1] / "src/brushwork/core/skeletons"

SD1_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
}
SD2_UNET = SD1_UNET | {
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SDXL_VAE = VAE | {"sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
CLIP_L: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
# OpenCLIP ViT-H/14 text tower; SD 2.x uses the penultimate layer, so diffusers keeps 23 of 24.
OPENCLIP_H = CLIP_L | {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "projection_dim": 512,
}
OPENCLIP_BIGG = CLIP_L | {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
SCHEDULER: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}


def full_unet(cfg: dict[str, Any]) -> dict[str, Any]:
    with torch.device("meta"):
        model = UNet2DConditionModel(**cfg)
    return dict(model.config) | {"_class_name": "UNet2DConditionModel"}


def full_vae(cfg: dict[str, Any]) -> dict[str, Any]:
    with torch.device("meta"):
        model = AutoencoderKL(**cfg)
    return dict(model.config) | {"_class_name": "AutoencoderKL"}


def full_clip(cfg: dict[str, Any], with_projection: bool) -> dict[str, Any]:
    data = CLIPTextConfig(**cfg).to_dict()
    data["architectures"] = ["CLIPTextModelWithProjection" if with_projection else "CLIPTextModel"]
    for key in ("transformers_version", "_name_or_path"):
        data.pop(key, None)
    return data


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(data.items())}
    clean.pop("_use_default_values", None)
    path.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")


def model_index(pipeline: str, two_encoders: bool) -> dict[str, Any]:
    index: dict[str, Any] = {
        "_class_name": pipeline,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if two_encoders:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
        index["force_zeros_for_empty_prompt"] = True
    else:
        index["safety_checker"] = [None, None]
        index["feature_extractor"] = [None, None]
        index["requires_safety_checker"] = False
    return index


def main() -> None:
    families = {
        "sd1": (SD1_UNET, VAE, [CLIP_L], SCHEDULER),
        "sd2": (SD2_UNET, VAE, [OPENCLIP_H], SCHEDULER),
        "sd2-v": (
            SD2_UNET | {"sample_size": 96},
            VAE | {"sample_size": 768},
            [OPENCLIP_H],
            SCHEDULER | {"prediction_type": "v_prediction"},
        ),
        "sdxl": (SDXL_UNET, SDXL_VAE, [CLIP_L, OPENCLIP_BIGG], SCHEDULER),
    }
    for name, (unet, vae, encoders, scheduler) in families.items():
        folder = OUT / name
        two = len(encoders) == 2
        pipeline = "StableDiffusionXLPipeline" if two else "StableDiffusionPipeline"
        write(folder / "model_index.json", model_index(pipeline, two))
        write(folder / "unet" / "config.json", full_unet(unet))
        write(folder / "vae" / "config.json", full_vae(vae))
        write(folder / "text_encoder" / "config.json", full_clip(encoders[0], False))
        if two:
            write(folder / "text_encoder_2" / "config.json", full_clip(encoders[1], True))
        write(folder / "scheduler" / "scheduler_config.json", scheduler)
        print(f"wrote {folder}")


if __name__ == "__main__":
    main()
