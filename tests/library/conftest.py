"""Small model files with realistic key layouts, and library folders to put them in."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from brushwork.core.settings import Settings
from brushwork.formats.safeio import write_pickle, write_safetensors

LORA_MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
TE_MODULE = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"


def lora_tensors(context: int = 768) -> dict[str, torch.Tensor]:
    """A kohya LoRA: one UNet cross-attention module and one text-encoder module, rank 4."""
    return {
        f"{LORA_MODULE}.lora_down.weight": torch.randn(4, context),
        f"{LORA_MODULE}.lora_up.weight": torch.randn(320, 4),
        f"{LORA_MODULE}.alpha": torch.tensor(4.0),
        f"{TE_MODULE}.lora_down.weight": torch.randn(4, context),
        f"{TE_MODULE}.lora_up.weight": torch.randn(context, 4),
        f"{TE_MODULE}.alpha": torch.tensor(4.0),
    }


def checkpoint_tensors(*, ema: bool = False, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """An SD1 checkpoint in the A1111/LDM layout, with every dimension but the widths shrunk."""
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (
            torch.randn(8, 768)
        ),
        "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
        "first_stage_model.decoder.conv_out.weight": torch.randn(3, 8, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (
            torch.randn(16, 768)
        ),
    }
    tensors = {key: value.to(dtype) for key, value in tensors.items()}
    if ema:
        tensors["model_ema.decay"] = torch.tensor(0.9999)
        tensors["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
        tensors["model_ema.diffusion_modelinput_blocks00weight"] = torch.randn(8, 4, 3, 3)
    return tensors


def vae_tensors() -> dict[str, torch.Tensor]:
    """A standalone A1111 VAE (LDM names, no prefix)."""
    return {
        "encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
        "encoder.down.0.block.0.conv1.weight": torch.randn(8, 8, 3, 3),
        "decoder.conv_in.weight": torch.randn(8, 4, 3, 3),
        "decoder.up.0.block.0.conv1.weight": torch.randn(8, 8, 3, 3),
        "quant_conv.weight": torch.randn(8, 8, 1, 1),
        "post_quant_conv.weight": torch.randn(4, 4, 1, 1),
    }


def a1111_embedding(vectors: int = 2, width: int = 768) -> dict[str, Any]:
    """A1111's own textual-inversion `.pt` layout."""
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.randn(vectors, width)},
        "name": "stored-name",
        "step": 500,
        "sd_checkpoint": "abcdef0123",
        "sd_checkpoint_name": "v1-5",
    }


def hypernetwork(width: int = 768) -> dict[Any, Any]:
    """A1111's hypernetwork `.pt`: an MLP pair per context width, layer structure [1, 2, 1]
    (hidden width shrunk to 16 to keep the file small)."""

    def mlp() -> dict[str, torch.Tensor]:
        return {
            "linear.0.weight": torch.randn(16, width),
            "linear.0.bias": torch.randn(16),
            "linear.2.weight": torch.randn(width, 16),
            "linear.2.bias": torch.randn(width),
        }

    return {
        width: (mlp(), mlp()),
        "layer_structure": [1, 2, 1],
        "activation_func": "relu",
        "is_layer_norm": False,
        "weight_initialization": "Normal",
        "use_dropout": False,
        "activate_output": False,
        "name": "hn",
        "step": 100,
    }


def write_lora(path: Path, metadata: dict[str, str] | None = None) -> Path:
    write_safetensors(path, lora_tensors(), metadata)
    return path


def write_big_lora(path: Path) -> Path:
    """A LoRA over 1.1 MiB, so the legacy hash (64 KiB at 1 MiB) covers real bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{LORA_MODULE}.lora_down.weight": torch.randn(256, 768),
        f"{LORA_MODULE}.lora_up.weight": torch.randn(640, 256),
        f"{LORA_MODULE}.alpha": torch.tensor(8.0),
    }
    write_safetensors(path, tensors, {"ss_output_name": "big", "ss_network_dim": "256"})
    return path


def write_checkpoint(path: Path, *, ema: bool = False) -> Path:
    if path.suffix == ".ckpt":
        write_pickle(path, {"state_dict": checkpoint_tensors(ema=ema), "global_step": 10})
    else:
        write_safetensors(path, checkpoint_tensors(ema=ema))
    return path


def write_vae(path: Path) -> Path:
    if path.suffix == ".safetensors":
        write_safetensors(path, vae_tensors())
    else:
        write_pickle(path, {"state_dict": vae_tensors()})
    return path


def write_embedding(path: Path) -> Path:
    if path.suffix == ".safetensors":
        write_safetensors(path, {"emb_params": torch.randn(2, 768)})
    else:
        write_pickle(path, a1111_embedding())
    return path


def write_hypernetwork(path: Path) -> Path:
    write_pickle(path, hypernetwork())
    return path


WRITERS: dict[str, Callable[[Path], Path]] = {
    "checkpoint": write_checkpoint,
    "vae": write_vae,
    "lora": write_lora,
    "embedding": write_embedding,
    "hypernetwork": write_hypernetwork,
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data dir (and so the index) is private to the test."""
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "webui"
    path.mkdir()
    return path


def place(root: Path, relative: str, kind: str) -> Path:
    """Write a model of `kind` at `root/relative`."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return WRITERS[kind](path)


def touch_later(path: Path) -> None:
    """Change a file's mtime (by a full second, beyond any file system's granularity)."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
