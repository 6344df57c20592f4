"""LoRA key names as data: the one place that knows how LoRA files name their tensors.

`parse_key` splits any LoRA key into its dialect, module name, part and module type. `detect` and
`summary` use it on shapes (which dialect, how many modules, rank, widths); the reader
(`_lora_names`, `lora`) maps the parsed module names to the modules they patch.

Dialects:
* `kohya` (sd-scripts, A1111, OneTrainer): `lora_unet_<path>.<part>`, `lora_te[12]_<path>.<part>`,
  the module path with dots turned into underscores, split at the first dot (as A1111 does);
* `diffusers`: `unet.<dotted path>.lora_A.weight` / `.lora.down.weight` /
  `...processor.to_k_lora.down.weight`, also with `text_encoder.`/`text_encoder_2.` prefixes;
* `peft`: `base_model.model.<dotted path>.lora_A[.<adapter>].weight`;
* `bundle`: embeddings bundled in a kohya LoRA (`bundle_emb.<name>.*`).

Every dialect's part spelling is mapped to kohya's (`lora_A.weight` -> `lora_down.weight`), so
a module's parts read the same whatever file it came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from brushwork.core.kinds import BaseFamily
from brushwork.formats.families import (
    CONTEXT_WIDTHS,
    SINGLE_TEXT_ENCODER_WIDTHS,
    FamilyVote,
    width_vote,
)

UNET = "unet"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"

# kohya module-name prefixes (before `_<path>`) -> the component they patch; None: a prefix other
# tools write (SD3's third encoder, OFT networks) that brushwork recognises but does not read
KOHYA_PREFIXES: dict[str, str | None] = {
    "lora_unet": UNET,
    "lora_te": TEXT_ENCODER,
    "lora_te1": TEXT_ENCODER,
    "lora_te2": TEXT_ENCODER_2,
    "lora_te3": None,
    "oft_unet": None,
}
KOHYA_TE_PREFIXES = {  # what kohya names each text encoder's modules, per family
    BaseFamily.SD1: {TEXT_ENCODER: "lora_te"},
    BaseFamily.SD2: {TEXT_ENCODER: "lora_te"},
    BaseFamily.SDXL: {TEXT_ENCODER: "lora_te1", TEXT_ENCODER_2: "lora_te2"},
}
PEFT_PREFIX = "base_model.model."
BUNDLE_PREFIX = "bundle_emb."

_LOHA_PARTS = ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")
_LOKR_PARTS = ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")
# The parts A1111's LoRA/LyCORIS modules accept after the module name (a1111.md 2c), by module
# type: kohya part name -> internal part name (the first spelling of an internal name is written)
PART_TYPES: dict[str, dict[str, str]] = {
    "lora": {
        "lora_down.weight": "down",
        "lora_up.weight": "up",
        "lora_mid.weight": "mid",
        "lora_A.weight": "down",
        "lora_B.weight": "up",
    },
    "loha": {f"hada_{name}": name for name in _LOHA_PARTS},
    "lokr": {f"lokr_{name}": name for name in _LOKR_PARTS},
    "full": {"diff": "diff", "diff_b": "diff_b"},
    "ia3": {"weight": "weight", "on_input": "on_input"},
    "norm": {"w_norm": "w_norm", "b_norm": "b_norm"},
    "glora": {"a1.weight": "a1", "a2.weight": "a2", "b1.weight": "b1", "b2.weight": "b2"},
    "oft": {"oft_blocks": "blocks", "oft_diag": "diag"},
}
COMMON_PARTS = ("alpha", "scale", "dora_scale", "bias")  # parts of any module type
READ_TYPES = ("lora", "loha", "lokr", "full")  # the module types brushwork reads
READ_COMMON_PARTS = ("alpha", "scale", "dora_scale")
REFUSED_TYPES = {"ia3": "IA3", "norm": "Norm", "glora": "GLoRA", "oft": "OFT"}  # named in errors
KOHYA_PARTS: dict[str, tuple[str | None, str]] = {  # kohya part -> (module type, internal part)
    part: (kind, internal) for kind, parts in PART_TYPES.items() for part, internal in parts.items()
} | {part: (None, part) for part in COMMON_PARTS}
WRITE_PARTS: dict[str, dict[str, str]] = {  # module type -> internal part -> kohya part
    kind: {internal: part for part, internal in reversed(parts.items())}
    for kind, parts in PART_TYPES.items()
}
# The type a module is, from the first of these parts it has (A1111's order).
TYPE_MARKERS: tuple[tuple[str, str], ...] = (
    ("lora_down.weight", "lora"),
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

# The parts of dotted (diffusers / PEFT) keys, in the order they are tried: pattern -> kohya part
# for each value of the `p` group. PEFT's embedding LoRA parts are recognised but not read.
_DOTTED_PARTS: tuple[tuple[re.Pattern[str], Mapping[str, str]], ...] = (
    (
        re.compile(r"^(?P<m>.+)\.lora_(?P<p>[AB])(?:\.[\w-]+)?\.weight$"),
        {"A": "lora_down.weight", "B": "lora_up.weight"},
    ),
    (
        re.compile(
            r"^(?P<m>.+?)(?:\.lora_linear_layer|\.lora|(?<=_lora))\.(?P<p>down|up)\.weight$"
        ),
        {"down": "lora_down.weight", "up": "lora_up.weight"},
    ),
    (
        re.compile(r"^(?P<m>.+)\.lora_(?P<p>down|up|mid)\.weight$"),
        {"down": "lora_down.weight", "up": "lora_up.weight", "mid": "lora_mid.weight"},
    ),
    (
        re.compile(r"^(?P<m>.+)\.(?P<p>alpha|dora_scale)$"),
        {"alpha": "alpha", "dora_scale": "dora_scale"},
    ),
    (
        re.compile(r"^(?P<m>.+)\.lora_magnitude_vector(?:\.[\w-]+)?(?:\.weight)?$"),
        {"": "dora_scale"},
    ),
    (
        re.compile(r"^(?P<m>.+)\.(?P<p>lora_embedding_[AB])$"),
        {"lora_embedding_A": "lora_embedding_A", "lora_embedding_B": "lora_embedding_B"},
    ),
)
_OLD_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora$")
_OLD_TE = re.compile(r"\.self_attn\.to_(q|k|v|out)_lora$")
_NOT_WEIGHTS = frozenset({"alpha", "scale", "bias", "on_input"})
_CONTEXT_MODULE = re.compile(r"attn2_(processor_)?to_[kv]$")
_TE_QUERY_MODULE = re.compile(r"self_attn_q_proj$")
_TE2_REASON = "second text encoder keys (lora_te2_/text_encoder_2.) => sdxl"

Parts = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class LoraKey:
    """One LoRA tensor key, split into the module it belongs to and the part it is."""

    dialect: str  # kohya, diffusers, peft or bundle
    module: str  # kohya: the name before the first dot; dotted: the module path
    part: str  # kohya's spelling of the part ("lora_down.weight", "hada_w1_a", "alpha", ...)
    module_type: str | None  # from PART_TYPES; None for common parts and unread PEFT parts

    @property
    def internal_part(self) -> str | None:
        """The reader's name for this part ("down", "w1_a", "alpha"); None if it is not read."""
        kind, internal = KOHYA_PARTS.get(self.part, (None, None))
        if kind in READ_TYPES or (kind is None and internal in READ_COMMON_PARTS):
            return internal
        return None


def kohya_prefix(module: str) -> str | None:
    """The kohya prefix a module name starts with (`lora_te1` for `lora_te1_text_model_...`)."""
    return next((prefix for prefix in KOHYA_PREFIXES if module.startswith(prefix + "_")), None)


def parse_key(key: str) -> LoraKey | None:
    """The dialect, module and part of a LoRA key; None for a key no LoRA dialect has."""
    if key.startswith(BUNDLE_PREFIX):
        return LoraKey("bundle", BUNDLE_PREFIX.rstrip("."), key[len(BUNDLE_PREFIX) :], None)
    head, dot, part = key.partition(".")
    if dot and kohya_prefix(head) is not None:
        if part not in KOHYA_PARTS:
            return None
        kind, internal = KOHYA_PARTS[part]
        return LoraKey("kohya", head, WRITE_PARTS[kind][internal] if kind else part, kind)
    for pattern, parts in _DOTTED_PARTS:
        match = pattern.match(key)
        if match:
            part = parts[match.groupdict().get("p") or ""]
            dialect = "peft" if key.startswith(PEFT_PREFIX) else "diffusers"
            kind = KOHYA_PARTS.get(part, (None, ""))[0]
            return LoraKey(dialect, _fix_old_diffusers(match.group("m")), part, kind)
    return None


def _fix_old_diffusers(module: str) -> str:
    """The attention-processor spelling of older diffusers files, as module paths."""
    old = _OLD_PROCESSOR.search(module)
    if old:
        leaf = "to_out.0" if old.group(1) == "to_out" else old.group(1)
        return module[: old.start()] + "." + leaf
    old = _OLD_TE.search(module)
    if old:
        return module[: old.start()] + f".self_attn.{old.group(1)}_proj"
    return module


def is_lora_weight(key: str) -> bool:
    """Whether a key is a LoRA / LyCORIS weight (not only an alpha or a scale)."""
    parsed = parse_key(key)
    return parsed is not None and parsed.module_type is not None


def dialect_of(key: str) -> str | None:
    """`kohya`, `diffusers`, `peft`, `bundle`, or None for a key no LoRA dialect has."""
    parsed = parse_key(key)
    return None if parsed is None else parsed.dialect


def group_modules(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """LoRA modules by name, each with its parts' shapes (bundled embeddings left out)."""
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        parsed = parse_key(key)
        if parsed is not None and parsed.dialect != "bundle":
            modules.setdefault(parsed.module, {})[parsed.part] = shape
    return modules


def has_weights(parts: Parts) -> bool:
    return any(part not in _NOT_WEIGHTS for part in parts)


def module_type(parts: Parts) -> str:
    """`lora`, `loha`, `lokr`, `ia3`, `full`, `norm`, `glora`, `oft` or `unknown`."""
    for marker, kind in TYPE_MARKERS:
        if marker in parts:
            return kind
    return "unknown"


def rank(parts: Parts) -> int | None:
    """The rank (`dim`) of one module, as A1111 reads it."""
    for part in ("lora_down.weight", "hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
        shape = parts.get(part)
        if shape:
            return shape[0]
    return None


def in_features(parts: Parts) -> int | None:
    """The input width of the layer a module patches (Linear layers; None when unreadable)."""
    for part in ("lora_down.weight", "hada_w1_b"):
        shape = parts.get(part)
        if shape and len(shape) >= 2:
            return shape[1]
    w1 = parts.get("lokr_w1") or parts.get("lokr_w1_b")
    w2 = parts.get("lokr_w2") or parts.get("lokr_w2_b")
    if w1 and w2 and len(w1) == 2 and len(w2) == 2:
        return w1[1] * w2[1]  # kron(w1, w2) has w1.cols * w2.cols columns
    return None


def context_widths(modules: Mapping[str, Parts]) -> set[int]:
    """Input widths of the cross-attention to_k/to_v modules: the text conditioning width."""
    widths = set()
    for module, parts in modules.items():
        if _CONTEXT_MODULE.search(module.replace(".", "_")) and (width := in_features(parts)):
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


def family_votes(modules: Mapping[str, Parts]) -> list[FamilyVote]:
    """Family evidence in a LoRA's modules: a second text encoder, the context width, and the
    width of a single text encoder (`lora_te_`)."""
    votes: list[FamilyVote] = []
    if any(m.startswith(("lora_te2_", TEXT_ENCODER_2 + ".")) for m in modules):
        votes.append(FamilyVote(BaseFamily.SDXL, _TE2_REASON))
    for width in context_widths(modules):
        if vote := width_vote(width, CONTEXT_WIDTHS, "attn2 to_k/to_v input (context)"):
            votes.append(vote)
    for width in single_text_encoder_widths(modules):
        # 768 is both SD1's CLIP-L and SDXL's first encoder: it decides only under lora_te_
        if vote := width_vote(width, SINGLE_TEXT_ENCODER_WIDTHS, "lora_te_ text encoder"):
            votes.append(vote)
    return votes


def alpha_keys(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The keys of per-module `alpha` scalars."""
    return [
        key
        for key in shapes
        if (parsed := parse_key(key)) is not None
        and parsed.part == "alpha"
        and parsed.dialect != "bundle"
    ]
