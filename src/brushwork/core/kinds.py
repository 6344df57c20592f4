"""The five model kinds and the base-model families brushwork knows."""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    """What a model file is, as users name it."""

    CHECKPOINT = "checkpoint"
    VAE = "vae"
    LORA = "lora"
    EMBEDDING = "embedding"
    HYPERNETWORK = "hypernetwork"


class BaseFamily(StrEnum):
    """The Stable Diffusion generation a file belongs to."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"


class FileFormat(StrEnum):
    """The container a model file is stored in."""

    SAFETENSORS = "safetensors"
    PICKLE = "pickle"
