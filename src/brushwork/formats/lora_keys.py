"""LoRA key names as data: which dialect a key is in, and its module and part.

Shared by `detect` (is this a LoRA, of which family) and `summary` (rank, alpha, module kinds).
Only names and shapes are used; no tensor values.

Dialects:
* `kohya` (sd-scripts, A1111, OneTrainer): `lora_unet_<path>.<part>`, `lora_te[12]_<path>.<part>`,
  the module path with dots turned into underscores, split at the first dot (as A1111 does);
* `diffusers`: `unet.<dotted path>.lora_A.weight` / `.lora.down.weight` /
  `...processor.to_k_lora.down.weight`, also with `text_encoder.`/`text_encoder_2.` prefixes;
* `peft`: `base_model.model.<dotted path>.lora_A.weight`;
* `bundle`: embeddings bundled in a kohya LoRA (`bundle_emb.<name>.*`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "oft_unet_")

# The parts A1111's LoRA/LyCORIS modules accept after the module name (a1111.md 2c), by type.
KOHYA_PART_TYPES: dict[str, tuple[str, ...]] = {
    "lora": (
        "lora_down.weight",
        "lora_up.weight",
        "lora_mid.weight",
        "lora_A.weight",
        "lora_B.weight",
    ),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
    "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
    "ia3": ("weight", "on_input"),
    "full": ("diff", "diff_b"),
    "norm": ("w_norm", "b_norm"),
    "glora": ("a1.weight", "a2.weight", "b1.weight", "b2.weight"),
    "oft": ("oft_blocks", "oft_diag"),
    "common": ("alpha", "scale", "dora_scale", "bias"),
}
KOHYA_PARTS = frozenset(part for parts in KOHYA_PART_TYPES.values() for part in parts)
# The type a module is, from the first of these parts it has (A1111's order).
TYPE_MARKERS: tuple[tuple[str, str], ...] = (
    ("lora_down.weight", "lora"),
    ("lora_A.weight", "lora"),
    ("lora.down.weight", "lora"),
    ("hada_w1_a", "loha"),
    ("lokr_w1", "lokr"),
    ("lokr_w1_a", "lokr"),
    ("diff", "full"),
    ("w_norm", "norm"),
    ("a1.weight", "glora"),
    ("oft_blocks", "oft"),
    ("oft_diag", "oft"),
    ("weight", "ia3"),
)
# Parts of dotted (diffusers / peft) LoRA keys; longest first so `lora.down.weight` wins.
DOTTED_PARTS: tuple[str, ...] = (
    "lora_magnitude_vector.weight",
    "lora_magnitude_vector",
    "lora_embedding_A",
    "lora_embedding_B",
    "lora.down.weight",
    "lora.up.weight",
    "lora_A.weight",
    "lora_B.weight",
    "alpha",
)
DIFFUSERS_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.", "transformer.")
PEFT_PREFIX = "base_model.model."
BUNDLE_PREFIX = "bundle_emb."
_DOWN_PARTS = ("lora_down.weight", "lora_A.weight", "lora.down.weight")
_WEIGHT_PARTS = frozenset(KOHYA_PARTS - {"alpha", "scale", "bias", "on_input"}) | frozenset(
    DOTTED_PARTS[:-1]
)
_CONTEXT_MODULE = re.compile(r"attn2_(processor_)?to_[kv]$")
_TE_QUERY_MODULE = re.compile(r"self_attn_q_proj$")

Parts = Mapping[str, tuple[int, ...]]


def _dotted_part(key: str) -> str | None:
    """The LoRA part a dotted key ends with (`lora.down.weight`, `lora_A.weight`, ...)."""
    for part in DOTTED_PARTS:
        # old diffusers attention-processor files: `...processor.to_k_lora.down.weight`
        if key.endswith("." + part) or (part.startswith("lora.") and key.endswith("_" + part)):
            return part
    return None


def dialect_of(key: str) -> str | None:
    """`kohya`, `diffusers`, `peft`, `bundle`, or None for a key no LoRA dialect has."""
    if key.startswith(BUNDLE_PREFIX):
        return "bundle"
    head, dot, part = key.partition(".")
    if dot and head.startswith(KOHYA_PREFIXES):
        return "kohya" if part in KOHYA_PARTS else None
    if _dotted_part(key) is None:
        return None
    return "peft" if key.startswith(PEFT_PREFIX) else "diffusers"


def split_key(key: str) -> tuple[str, str]:
    """(module, part) of a LoRA key, in any dialect."""
    head, _, part = key.partition(".")
    if head.startswith(KOHYA_PREFIXES) or key.startswith(BUNDLE_PREFIX):
        return head, part
    part_name = _dotted_part(key) or key.rsplit(".", 1)[-1]
    return key[: -len(part_name)].rstrip("._"), part_name


def group_modules(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """LoRA modules by name, each with its parts' shapes (bundled embeddings left out)."""
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        if key.startswith(BUNDLE_PREFIX):
            continue
        module, part = split_key(key)
        modules.setdefault(module, {})[part] = shape
    return modules


def has_weights(parts: Parts) -> bool:
    return any(part in _WEIGHT_PARTS for part in parts)


def module_type(parts: Parts) -> str:
    """`lora`, `loha`, `lokr`, `ia3`, `full`, `norm`, `glora`, `oft` or `unknown`."""
    for marker, kind in TYPE_MARKERS:
        if marker in parts:
            return kind
    return "unknown"


def rank(parts: Parts) -> int | None:
    """The rank (`dim`) of one module, as A1111 reads it."""
    for part in (*_DOWN_PARTS, "hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
        shape = parts.get(part)
        if shape:
            return shape[0]
    return None


def in_features(parts: Parts) -> int | None:
    """The input width of the layer a module patches (Linear layers; None when unreadable)."""
    for part in (*_DOWN_PARTS, "hada_w1_b"):
        shape = parts.get(part)
        if shape and len(shape) >= 2:
            return shape[1]
    w1 = parts.get("lokr_w1") or parts.get("lokr_w1_b")
    w2 = parts.get("lokr_w2") or parts.get("lokr_w2_b")
    if w1 and w2 and len(w1) == 2 and len(w2) == 2:
        return w1[1] * w2[1]  # kron(w1, w2) has w1.cols * w2.cols columns
    return None


def _normalised(module: str) -> str:
    return module.replace(".", "_")


def context_widths(modules: Mapping[str, Parts]) -> set[int]:
    """Input widths of the cross-attention to_k/to_v modules: the text conditioning width."""
    widths = set()
    for module, parts in modules.items():
        if _CONTEXT_MODULE.search(_normalised(module)) and (width := in_features(parts)):
            widths.add(width)
    return widths


def single_text_encoder_widths(modules: Mapping[str, Parts]) -> set[int]:
    """Hidden widths of a kohya single text encoder (`lora_te_`, SD1/SD2 files only)."""
    widths = set()
    for module, parts in modules.items():
        is_query = module.startswith("lora_te_") and _TE_QUERY_MODULE.search(module)
        if is_query and (width := in_features(parts)):
            widths.add(width)
    return widths


def alpha_keys(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The keys of per-module `alpha` scalars."""
    return [k for k in shapes if split_key(k)[1] == "alpha" and not k.startswith(BUNDLE_PREFIX)]
