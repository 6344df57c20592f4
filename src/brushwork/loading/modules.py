"""Modules built on the `meta` device from configs, then given the file's weights.

Nothing is randomly initialised and no weight is held twice: a module is first built without
memory (`torch.device("meta")`), then every weight is copied, one tensor at a time, into a fresh
contiguous tensor of the target dtype on the target device, and handed to the module with
`load_state_dict(assign=True)`. The source tensor is dropped as soon as it is copied, so peak
memory stays about one model. Fresh tensors are also clean: torch's allocator aligns them, where
views into a file buffer may sit at any offset (diffusers' `from_single_file` keeps such views,
which changes vectorised maths in the last bit).

Loading is strict: a weight the module lacks, a weight the file lacks, or a shape that differs is
an error that names them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from brushwork.core.arch import tokenizer_dir
from brushwork.core.errors import ConfigError, ModelFileError
from brushwork.core.kinds import BaseFamily

logger = logging.getLogger(__name__)

TextEncoder: TypeAlias = CLIPTextModel | CLIPTextModelWithProjection

WITH_PROJECTION = "CLIPTextModelWithProjection"
OPENCLIP_PAD_TOKEN = "!"  # SD2's and SDXL's second (OpenCLIP) tokenizer pad with "!" (id 0)
MAX_TOKENS = 77
ALIGNMENT = 64  # bytes; what torch's CPU allocator guarantees, enough for any SIMD load
_EXAMPLES = 3


def build_meta_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(dict(config))


def build_meta_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    with torch.device("meta"):
        return AutoencoderKL.from_config(dict(config))


def build_meta_text_encoder(config: Mapping[str, Any]) -> TextEncoder:
    with_projection = WITH_PROJECTION in (config.get("architectures") or [])
    clip_config = CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"})
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with torch.device("meta"):
        module: TextEncoder = cls(clip_config)
    return module


def is_clean(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a tensor already is what `clean_tensor` would make: its own whole, aligned,
    contiguous storage, of the right dtype, on the right device."""
    return (
        tensor.device == device
        and (tensor.dtype == dtype or not tensor.is_floating_point())
        and tensor.is_contiguous()
        and tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        and tensor.data_ptr() % ALIGNMENT == 0
    )


def clean_tensor(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fresh, contiguous, allocator-aligned copy; floating tensors cast to `dtype`.

    A tensor that is all that already (as `safeio.read_tensors_cast` returns them) is kept.
    """
    if is_clean(tensor, dtype, device):
        return tensor
    target = dtype if tensor.is_floating_point() else tensor.dtype
    out = torch.empty(tensor.shape, dtype=target, device=device)
    out.copy_(tensor)
    return out


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES])
    return shown + (f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else "")


def weight_problems(
    module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str
) -> list[str]:
    """What keeps `state_dict` from being exactly the module's weights, in its shapes."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{name} {tuple(state_dict[name].shape)} (needs {expected[name]})"
        for name in set(expected) & set(state_dict)
        if tuple(state_dict[name].shape) != expected[name]
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} {what} weights are missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} are not {what} weights ({_examples(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} have the wrong shape ({_examples(wrong)})")
    return problems


def check_weights(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    what: str,
    source: Path | None,
) -> None:
    """Raise unless `state_dict` has exactly the module's weights, in the module's shapes."""
    problems = weight_problems(module, state_dict, what)
    if problems:
        raise ModelFileError(
            source,
            f"does not fit the {what} it was read as: " + "; ".join(problems),
            hint="the file may be damaged or of an architecture brushwork does not support; "
            "a <name>.yaml config beside it can say what it is",
        )


def _materialize_buffers(module: torch.nn.Module, device: torch.device) -> None:
    """Give the non-persistent buffers (not in any file) their values: CLIP's position ids."""
    for name, buffer in list(module.named_buffers()):
        if not buffer.is_meta:
            continue
        owner_name, _, leaf = name.rpartition(".")
        if leaf != "position_ids":
            raise ConfigError(
                f"buffer {name!r} of {type(module).__name__} has no value after loading"
            )
        owner = module.get_submodule(owner_name)
        positions = torch.arange(buffer.shape[-1], device=device).expand(buffer.shape)
        owner.register_buffer(leaf, positions, persistent=False)


def assign_weights(
    module: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    device: torch.device,
    what: str,
    source: Path | None,
) -> None:
    """Move `state_dict` into the meta-built `module` (emptying the dict as it goes)."""
    check_weights(module, state_dict, what, source)
    clean: dict[str, torch.Tensor] = {}
    for name in list(state_dict):
        clean[name] = clean_tensor(state_dict.pop(name), dtype, device)
    module.load_state_dict(clean, strict=True, assign=True)
    _materialize_buffers(module, device)
    module.requires_grad_(False)
    module.eval()


def load_tokenizers(family: BaseFamily, text_encoder_names: list[str]) -> dict[str, CLIPTokenizer]:
    """The shipped CLIP tokenizer for each text encoder, keyed like the text encoders.

    The OpenCLIP towers (SD2's encoder, SDXL's second) were trained with "!" as padding; CLIP-L
    pads with its end token. The token ids are otherwise the same.
    """
    tokenizers: dict[str, CLIPTokenizer] = {}
    for name in text_encoder_names:
        openclip = family is BaseFamily.SD2 or name == "text_encoder_2"
        extra = {"pad_token": OPENCLIP_PAD_TOKEN} if openclip else {}
        tokenizers[name] = CLIPTokenizer.from_pretrained(
            str(tokenizer_dir()), model_max_length=MAX_TOKENS, **extra
        )
    return tokenizers


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if not t.is_meta)
