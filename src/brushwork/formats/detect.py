"""What a model file is: its kind and base family, from key names and shapes alone.

Identification is data (the tables below) plus one small matcher per kind, in the style of
InvokeAI's model probes: a matcher either describes the file or raises `NotAMatch` saying why
not. Every matcher runs; exactly one must match. No match is a `NotAModelError` that lists each
matcher's reason, several matches an `ArchitectureError`; nothing is guessed.

The base family follows the tools users already have: checkpoints by A1111's config detection
(`sd_models_config.guess_model_config_from_state_dict`), LoRA by kohya metadata, key names and
cross-attention width, embeddings and hypernetworks by width. Family-specific *names* decide even
for tiny test models; *widths* decide only when they are a real family's (768/1024/2048),
otherwise the family is unknown (None) and the reasons say so.

Safetensors files are identified from their header alone (`safeio.read_header`), so no tensor
is read; pickles are unpickled through `safeio.read_pickle` and their nested tensors flattened.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from brushwork.core.errors import ArchitectureError, NotAModelError
from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.formats import lora_keys
from brushwork.formats._ldm_keys import UNET_PREFIX
from brushwork.formats.families import (
    CONTEXT_WIDTHS,
    SINGLE_TEXT_ENCODER_WIDTHS,
    TEXT_ENCODER_ROOTS,
    FamilyVote,
    checkpoint_sentinel,
    metadata_votes,
    width_vote,
)
from brushwork.formats.tensor_view import TensorView, read_tensor_view

__all__ = [
    "Detection",
    "NotAMatch",
    "detect_file",
    "detect_state_dict",
    "detect_view",
    "hypernetwork_widths",
]

Shapes = Mapping[str, tuple[int, ...]]

SD1, SD2, SDXL = BaseFamily.SD1, BaseFamily.SD2, BaseFamily.SDXL


@dataclass(frozen=True)
class Detection:
    """The kind and base family of a model file, and why brushwork thinks so.

    `layout` names the key convention: `ldm` (A1111/CompVis single file), `diffusers`, `kohya`,
    `peft`, `a1111` (textual inversion `.pt` / hypernetwork), `sdxl` (clip_l + clip_g embedding),
    `emb_params`, `ldm-prefixed` (a VAE still carrying `first_stage_model.`).
    """

    kind: ModelKind
    base: BaseFamily | None
    format: FileFormat
    reasons: tuple[str, ...]
    layout: str | None = None


class NotAMatch(Exception):  # noqa: N818 - a matcher's answer, not a failure
    """A matcher's "not this kind, because ..."."""


@dataclass(frozen=True)
class KeySet:
    """What the matchers look at: tensor shapes, safetensors metadata, other top-level keys."""

    shapes: Shapes
    metadata: Mapping[str, str]
    extra_keys: frozenset[str]

    def with_prefix(self, prefix: str) -> list[str]:
        return [key for key in self.shapes if key.startswith(prefix)]

    def has_prefix(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in self.shapes)


@dataclass(frozen=True)
class _Match:
    kind: ModelKind
    base: BaseFamily | None
    reasons: tuple[str, ...]
    layout: str | None


def _decide(votes: Iterable[FamilyVote], none_reason: str) -> tuple[BaseFamily | None, list[str]]:
    """The family all votes agree on, else None; conflicting votes are reported, never resolved."""
    votes = list(votes)
    reasons = [vote.reason for vote in votes]
    families = {vote.family for vote in votes}
    if not votes:
        return None, [none_reason]
    if len(families) == 1:
        return next(iter(families)), reasons
    named = ", ".join(sorted(str(f) if f else "other" for f in families))
    return None, [*reasons, f"base family unknown: the evidence conflicts ({named})"]


def _nonstandard(widths: Iterable[int], table: Mapping[int, BaseFamily], what: str) -> list[str]:
    odd = sorted(set(widths) - set(table))
    if not odd:
        return []
    known = "/".join(str(w) for w in table)
    odd_text = ", ".join(map(str, odd))
    return [f"{what} width {odd_text} is no real family's ({known}), so it names no family"]


# ---------------------------------------------------------------------------------------------
# checkpoints


CHECKPOINT_COMPANIONS: dict[str, str] = {
    "first_stage_model.": "VAE",
    "cond_stage_model.": "text encoder",
    "conditioner.embedders.": "text encoders",
}
UNET_INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"
UNET_VARIANTS: dict[int, str] = {9: "an inpainting UNet", 8: "an InstructPix2Pix UNet"}
_LDM_CONTEXT_KEY = re.compile(r"^model\.diffusion_model\..*\.attn2\.to_[kv]\.weight$")
_DIFFUSERS_UNET_SENTINELS = ("conv_in.weight", "unet.conv_in.weight")


def _checkpoint_family(keys: KeySet) -> tuple[BaseFamily | None, list[str]]:
    sentinel = checkpoint_sentinel(keys.shapes)
    if sentinel is not None:
        if sentinel.family is None:
            return None, [f"{sentinel.key} => {sentinel.description}, not SD1/SD2/SDXL"]
        return sentinel.family, [f"{sentinel.key} => {sentinel.description}"]
    if any(keys.has_prefix(root) for root in TEXT_ENCODER_ROOTS):
        return None, ["its text encoder keys match no known family (AltDiffusion or other)"]
    widths = {keys.shapes[k][1] for k in keys.shapes if _LDM_CONTEXT_KEY.match(k)}
    votes = [v for w in widths if (v := width_vote(w, CONTEXT_WIDTHS, "UNet context"))]
    family, reasons = _decide(votes, "no text encoder and no cross-attention: family unknown")
    return family, reasons + _nonstandard(widths, CONTEXT_WIDTHS, "UNet context")


def match_checkpoint(keys: KeySet) -> _Match:
    if not keys.has_prefix(UNET_PREFIX):
        if any(k in keys.shapes for k in _DIFFUSERS_UNET_SENTINELS):
            raise NotAMatch(
                "diffusers-layout UNet weights (conv_in, down_blocks.*): A1111 does not load these "
                "as a checkpoint; it needs a single file with model.diffusion_model.* keys"
            )
        raise NotAMatch("no model.diffusion_model.* keys (the UNet of a single-file checkpoint)")
    parts = [name for prefix, name in CHECKPOINT_COMPANIONS.items() if keys.has_prefix(prefix)]
    if not parts:
        raise NotAMatch(
            "only UNet weights (model.diffusion_model.*), no VAE or text encoder: "
            "not a full checkpoint"
        )
    family, reasons = _checkpoint_family(keys)
    reasons = [f"model.diffusion_model.* with {' and '.join(parts)} => checkpoint", *reasons]
    in_conv = keys.shapes.get(UNET_INPUT_CONV, ())
    if len(in_conv) == 4 and in_conv[1] in UNET_VARIANTS:
        reasons.append(f"{in_conv[1]} UNet input channels => {UNET_VARIANTS[in_conv[1]]}")
    layout = "sgm" if keys.has_prefix("conditioner.") else "ldm"
    return _Match(ModelKind.CHECKPOINT, family, tuple(reasons), layout)


# ---------------------------------------------------------------------------------------------
# VAEs

VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
VAE_IGNORED_PREFIXES = ("loss.", "model_ema.decay", "model_ema.num_updates")  # A1111 drops these
VAE_LAYOUTS: dict[str, tuple[str, ...]] = {
    "ldm": ("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid."),
    "diffusers": ("encoder.down_blocks.", "decoder.up_blocks.", "encoder.mid_block."),
}
VAE_BASE_REASON = (
    "a VAE fits SD1 and SD2 alike, and an SDXL VAE has the same shapes: family unknown"
)


def match_vae(keys: KeySet) -> _Match:
    names = [k for k in keys.shapes if not k.startswith(VAE_IGNORED_PREFIXES)]
    prefixed = "first_stage_model."
    if names and all(k.startswith(prefixed) for k in names):
        names = [k.removeprefix(prefixed) for k in names]
        reasons = ["only first_stage_model.* keys => a VAE cut from a checkpoint with its prefix"]
        reasons.append("A1111 loads VAE files without the first_stage_model. prefix")
        layout_override: str | None = "ldm-prefixed"
    else:
        reasons, layout_override = [], None
    strays = [k for k in names if not k.startswith(VAE_PREFIXES)]
    if strays or not names:
        raise NotAMatch(f"keys outside encoder./decoder./quant_conv. (e.g. {_examples(strays)})")
    if not (
        any(k.startswith("encoder.") for k in names)
        and any(k.startswith("decoder.") for k in names)
    ):
        raise NotAMatch("a VAE needs both encoder.* and decoder.* keys")
    layout = next(
        (
            name
            for name, prefixes in VAE_LAYOUTS.items()
            if any(k.startswith(prefixes) for k in names)
        ),
        None,
    )
    if layout is None:
        raise NotAMatch(
            "encoder./decoder. keys, but not an AutoencoderKL's (LDM or diffusers names)"
        )
    reasons.insert(0, f"encoder.*/decoder.* keys in {layout} naming => VAE")
    if layout == "diffusers":
        reasons.append("A1111 cannot load diffusers-named VAE files; convert to LDM names")
    reasons.append(VAE_BASE_REASON)
    return _Match(ModelKind.VAE, None, tuple(reasons), layout_override or layout)


def _examples(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) if keys else "none"


# ---------------------------------------------------------------------------------------------
# LoRA


def match_lora(keys: KeySet) -> _Match:
    dialects = {key: lora_keys.dialect_of(key) for key in keys.shapes}
    strays = [key for key, dialect in dialects.items() if dialect is None]
    found = {d for d in dialects.values() if d not in (None, "bundle")}
    if not found:
        raise NotAMatch("no LoRA keys (lora_unet_*/lora_te*_*, lora_A/lora_B, lora.down/up)")
    if strays:
        raise NotAMatch(f"{len(strays)} keys are not LoRA keys (e.g. {_examples(strays)})")
    modules = lora_keys.group_modules(keys.shapes)
    if not any(lora_keys.has_weights(parts) for parts in modules.values()):
        raise NotAMatch("LoRA-named keys but no LoRA weights (only alphas or scales)")
    layout = found.pop() if len(found) == 1 else "mixed"
    reasons = [f"{len(modules)} LoRA modules in {layout} naming => LoRA"]
    if layout != "kohya":
        reasons.append("A1111 loads only kohya-named LoRA (lora_unet_*, lora_te_*); convert it")
    family, family_reasons = _decide(
        _lora_votes(keys, modules), "no metadata, key names or standard widths: family unknown"
    )
    widths = lora_keys.context_widths(modules)
    reasons += family_reasons + _nonstandard(widths, CONTEXT_WIDTHS, "cross-attention context")
    return _Match(ModelKind.LORA, family, tuple(reasons), layout)


def _lora_votes(
    keys: KeySet, modules: Mapping[str, Mapping[str, tuple[int, ...]]]
) -> list[FamilyVote]:
    return metadata_votes(keys.metadata) + lora_keys.family_votes(modules)


# ---------------------------------------------------------------------------------------------
# textual-inversion embeddings


def _vector_shape(shape: tuple[int, ...], key: str) -> tuple[int, int]:
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise NotAMatch(f"{key!r} has shape {list(shape)}; embedding vectors are 1-D or 2-D")


def match_embedding(keys: KeySet) -> _Match:
    names = list(keys.shapes)
    params = keys.with_prefix("string_to_param.")
    if params or "string_to_param" in keys.extra_keys:
        if len(params) != 1 or len(names) != 1:
            raise NotAMatch(f"string_to_param holds {len(params)} terms; A1111 loads only one")
        vectors, width = _vector_shape(keys.shapes[params[0]], params[0])
        return _embedding_match(keys, "a1111", vectors, {width}, "string_to_param")
    if {"clip_l", "clip_g"} <= set(names):
        if len(names) != 2:
            raise NotAMatch("clip_l and clip_g beside other tensors")
        _, width_l = _vector_shape(keys.shapes["clip_l"], "clip_l")
        vectors, width_g = _vector_shape(keys.shapes["clip_g"], "clip_g")
        reasons = ["clip_l + clip_g => SDXL embedding"]
        if (width_l, width_g) != (768, 1280):
            reasons.append(f"widths {width_l}/{width_g}, not SDXL's 768/1280: a test model")
        return _Match(ModelKind.EMBEDDING, SDXL, tuple(reasons), "sdxl")
    if len(names) == 1 and "." not in names[0]:
        vectors, width = _vector_shape(keys.shapes[names[0]], names[0])
        layout = "emb_params" if names[0] == "emb_params" else "diffusers"
        return _embedding_match(keys, layout, vectors, {width}, f"one tensor {names[0]!r}")
    raise NotAMatch(
        f"{len(names)} tensors, none of: string_to_param, clip_l + clip_g, one {{token: vector}}"
    )


def _embedding_match(
    keys: KeySet, layout: str, vectors: int, widths: set[int], source: str
) -> _Match:
    votes = metadata_votes(keys.metadata)
    votes += [v for w in widths if (v := width_vote(w, SINGLE_TEXT_ENCODER_WIDTHS, "vector"))]
    family, reasons = _decide(votes, "no standard width or metadata: family unknown")
    reasons = [f"{source} with {vectors} vector(s) => embedding", *reasons]
    reasons += _nonstandard(widths, SINGLE_TEXT_ENCODER_WIDTHS, "vector")
    return _Match(ModelKind.EMBEDDING, family, tuple(reasons), layout)


# ---------------------------------------------------------------------------------------------
# hypernetworks

# `{768: (k_state_dict, v_state_dict), ...}` flattens to `768.0.linear.0.weight`
HYPERNETWORK_KEY = re.compile(r"^(\d+)\.([01])\.(linear\.\d+|linear[12])\.(weight|bias)$")
HYPERNETWORK_FIELDS = ("layer_structure", "activation_func")


def hypernetwork_widths(shapes: Shapes) -> list[int]:
    """The context widths a hypernetwork has MLP pairs for (its integer keys)."""
    return sorted({int(m.group(1)) for k in shapes if (m := HYPERNETWORK_KEY.match(k))})


def match_hypernetwork(keys: KeySet) -> _Match:
    strays = [k for k in keys.shapes if not HYPERNETWORK_KEY.match(k)]
    if strays or not keys.shapes:
        raise NotAMatch(f"keys other than <width>.<0|1>.linear.* (e.g. {_examples(strays)})")
    widths = hypernetwork_widths(keys.shapes)
    fields = [f for f in HYPERNETWORK_FIELDS if f in keys.extra_keys]
    reasons = [f"MLP pairs under integer keys {widths} => hypernetwork"]
    reasons.append(f"with {', '.join(fields)}" if fields else "no layer_structure/activation_func")
    context = [w for w in widths if w in CONTEXT_WIDTHS]
    votes = [v for w in context if (v := width_vote(w, CONTEXT_WIDTHS, "context"))]
    family, family_reasons = _decide(
        votes, "no context width (768/1024/2048) among its widths: family unknown"
    )
    return _Match(ModelKind.HYPERNETWORK, family, tuple(reasons + family_reasons), "a1111")


# ---------------------------------------------------------------------------------------------
# the API

MATCHERS: dict[ModelKind, Callable[[KeySet], _Match]] = {
    ModelKind.CHECKPOINT: match_checkpoint,
    ModelKind.VAE: match_vae,
    ModelKind.LORA: match_lora,
    ModelKind.EMBEDDING: match_embedding,
    ModelKind.HYPERNETWORK: match_hypernetwork,
}


def detect_state_dict(
    shapes: Shapes,
    *,
    metadata: Mapping[str, str] | None = None,
    extra_keys: Iterable[str] = (),
    format: FileFormat = FileFormat.SAFETENSORS,
    path: Path | None = None,
) -> Detection:
    """Identify a state dict from its key -> shape map (no tensor values needed)."""
    keys = KeySet(dict(shapes), dict(metadata or {}), frozenset(extra_keys))
    if not keys.shapes:
        raise NotAModelError(path, "holds no tensors")
    matches: dict[ModelKind, _Match] = {}
    misses: list[str] = []
    for kind, matcher in MATCHERS.items():
        try:
            matches[kind] = matcher(keys)
        except NotAMatch as why:
            misses.append(f"not {_with_article(kind)}: {why}")
    if len(matches) > 1:
        kinds = ", ".join(str(kind) for kind in matches)
        raise ArchitectureError(path, f"matches several model kinds ({kinds}); refusing to guess")
    if not matches:
        raise NotAModelError(
            path,
            "is not a model file brushwork recognises (" + "; ".join(misses) + ")",
            hint="brushwork reads SD checkpoints, VAEs, LoRA, embeddings and hypernetworks",
        )
    (match,) = matches.values()
    return Detection(match.kind, match.base, format, match.reasons, match.layout)


def _with_article(kind: ModelKind) -> str:
    return f"an {kind}" if kind is ModelKind.EMBEDDING else f"a {kind}"


def detect_view(view: TensorView, path: Path | None = None) -> Detection:
    """Identify the file a `TensorView` shows (`path` only names it in errors)."""
    return detect_state_dict(
        view.shapes, metadata=view.metadata, extra_keys=view.fields, format=view.format, path=path
    )


def detect_file(path: Path | str) -> Detection:
    """Identify a model file. Safetensors: header only. Pickles: unpickled safely first."""
    path = Path(path)
    return detect_view(read_tensor_view(path), path)
