"""loading floor (F2): checkpoint files -> diffusers/transformers modules on a device.

    load_model(path, *, device="auto", precision="auto", vae="auto", ...) -> LoadedModel
    swap_vae(model, vae) ; decode_latents(model, latents)
    ComponentCache(max_bytes).get_or_load(path, ...)

Modules are built from the shipped config skeletons (never a hub) on the `meta` device and given
the file's weights directly; see `loading.modules` for why the tensors are fresh copies, and
`loading.precision` for the device/dtype policy.
"""

from brushwork.loading.cache import CacheKey, CacheStats, ComponentCache, estimate_model_bytes
from brushwork.loading.loader import alphas_cumprod_for, load_model
from brushwork.loading.model import BAKED, FileStamp, LoadedModel
from brushwork.loading.precision import (
    PRECISIONS,
    choose_dtype,
    choose_vae_dtype,
    cpu_has_native_bf16,
    dtype_name,
    dtype_of,
    resolve_device,
)
from brushwork.loading.vae import decode_latents, resolve_vae_choice, swap_vae

__all__ = [
    "BAKED",
    "PRECISIONS",
    "CacheKey",
    "CacheStats",
    "ComponentCache",
    "FileStamp",
    "LoadedModel",
    "alphas_cumprod_for",
    "choose_dtype",
    "choose_vae_dtype",
    "cpu_has_native_bf16",
    "decode_latents",
    "dtype_name",
    "dtype_of",
    "estimate_model_bytes",
    "load_model",
    "resolve_device",
    "resolve_vae_choice",
    "swap_vae",
]
