"""Which base family (SD1, SD2, SDXL) a model belongs to: the rules, as data.

One table of checkpoint sentinel keys (A1111's config detection, in its order), the widths that
name a family, and what kohya / modelspec metadata says. `detect` turns them into reasons;
`architecture.detect_family` (and so `read_checkpoint`) into a family or a clear refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from brushwork.core.errors import ArchitectureError, UnsupportedModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats._ldm_keys import UNET_PREFIX

Shapes = Mapping[str, tuple[int, ...]]

SD1, SD2, SDXL = BaseFamily.SD1, BaseFamily.SD2, BaseFamily.SDXL

# Width of the text conditioning each family's UNet cross-attends to (attn2 to_k/to_v inputs).
CONTEXT_WIDTHS: dict[int, BaseFamily] = {768: SD1, 1024: SD2, 2048: SDXL}
# Width of a single text encoder (CLIP-L, OpenCLIP-H), so of one textual-inversion vector
# (SDXL has two encoders; its embeddings are a clip_l + clip_g pair instead).
SINGLE_TEXT_ENCODER_WIDTHS: dict[int, BaseFamily] = {768: SD1, 1024: SD2}
NOT_SUPPORTED = "not supported for generation"
_SUPPORTED = "brushwork reads SD 1.x, SD 2.x and SDXL base checkpoints"


@dataclass(frozen=True)
class FamilySentinel:
    """A key (a prefix when it ends with ".") whose presence names a checkpoint family.

    `width`, when given, must be the key's last dimension. `family` None: not SD1/SD2/SDXL.
    `readable` False: a family brushwork identifies but whose checkpoints it cannot read.
    """

    key: str
    family: BaseFamily | None
    description: str
    width: int | None = None
    readable: bool = True

    def present_in(self, shapes: Shapes) -> bool:
        if self.key.endswith("."):
            return any(key.startswith(self.key) for key in shapes)
        shape = shapes.get(self.key)
        if shape is None:
            return False
        return self.width is None or (len(shape) > 0 and shape[-1] == self.width)


# A1111's config detection, in its order (a1111.md 2d); the first sentinel present decides.
CHECKPOINT_SENTINELS: tuple[FamilySentinel, ...] = (
    FamilySentinel("model.diffusion_model.x_embedder.proj.weight", None, "an SD3 checkpoint"),
    FamilySentinel("model.diffusion_model.joint_blocks.", None, "an SD3 checkpoint"),
    FamilySentinel("model.diffusion_model.double_blocks.", None, "a Flux checkpoint"),
    FamilySentinel(
        "conditioner.embedders.1.model.ln_final.weight", SDXL, "SDXL: OpenCLIP-bigG at embedders.1"
    ),
    FamilySentinel(
        "conditioner.embedders.0.model.ln_final.weight",
        SD2,
        f"SD2 in SGM layout (SD2-Turbo; {NOT_SUPPORTED})",
        width=1024,
        readable=False,
    ),
    FamilySentinel(
        "conditioner.embedders.0.model.ln_final.weight",
        SDXL,
        f"an SDXL refiner ({NOT_SUPPORTED}): OpenCLIP-bigG only",
        readable=False,
    ),
    FamilySentinel("embedder.model.ln_final.weight", None, "an SD2 unCLIP checkpoint"),
    FamilySentinel(
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
        SD2,
        "SD2: OpenCLIP-H text encoder at cond_stage_model.model",
    ),
    FamilySentinel("cond_stage_model.transformer.", SD1, "SD1: CLIP-L text encoder"),
)
TEXT_ENCODER_ROOTS = ("cond_stage_model.", "conditioner.")
UNET_LABEL_EMBEDDING = UNET_PREFIX + "label_emb.0.0.weight"  # SDXL's vector conditioning
UNET_CONTEXT_SUFFIX = "attn2.to_k.weight"


def checkpoint_sentinel(shapes: Shapes) -> FamilySentinel | None:
    """The first sentinel a checkpoint's keys hold, in A1111's order (None: no sentinel)."""
    return next((s for s in CHECKPOINT_SENTINELS if s.present_in(shapes)), None)


def detect_family(shapes: Shapes, *, source: Path | None = None) -> BaseFamily:
    """The family of an LDM-layout checkpoint brushwork can read, from its keys and shapes.

    The sentinel keys decide; without a text encoder, SDXL's label_emb or the UNet's context
    width does. Anything else is refused with the reason.
    """
    sentinel = checkpoint_sentinel(shapes)
    if sentinel is not None:
        if sentinel.family is None:
            raise UnsupportedModelError(
                source, f"is {sentinel.description}, not SD 1.x/2.x/XL", hint=_SUPPORTED
            )
        if not sentinel.readable:
            raise UnsupportedModelError(source, f"is {sentinel.description}", hint=_SUPPORTED)
        return sentinel.family
    if any(key.startswith(TEXT_ENCODER_ROOTS) for key in shapes):
        raise UnsupportedModelError(
            source,
            "has text encoder keys of no SD 1.x/2.x/XL model (AltDiffusion?)",
            hint=_SUPPORTED,
        )
    if UNET_LABEL_EMBEDDING in shapes:
        return SDXL
    context = next((s[1] for k, s in shapes.items() if k.endswith(UNET_CONTEXT_SUFFIX)), None)
    if context in CONTEXT_WIDTHS:
        return CONTEXT_WIDTHS[context]
    raise ArchitectureError(
        source,
        "cannot tell whether this is an SD 1.x, 2.x or XL model (no text encoder weights, "
        f"cross-attention width {context})",
        hint="name the family explicitly, or put an LDM <stem>.yaml config beside the file",
    )


# ---------------------------------------------------------------------------------------------
# metadata


@dataclass(frozen=True)
class FamilyVote:
    """One piece of evidence for a base family (None: a family brushwork does not support)."""

    family: BaseFamily | None
    reason: str


# kohya `ss_base_model_version` prefixes and modelspec architecture prefixes
BASE_VERSION_PREFIXES: tuple[tuple[str, BaseFamily], ...] = (
    ("sdxl", SDXL),
    ("sd_v2", SD2),
    ("sd_v1", SD1),
)
MODELSPEC_PREFIXES: tuple[tuple[str, BaseFamily], ...] = (
    ("stable-diffusion-xl", SDXL),
    ("stable-diffusion-v2", SD2),
    ("stable-diffusion-v1", SD1),
)


def width_vote(width: int, table: Mapping[int, BaseFamily], what: str) -> FamilyVote | None:
    """The vote of a width that names a family in `table` (None for any other width)."""
    if width in table:
        return FamilyVote(table[width], f"{what} width {width} => {table[width]}")
    return None


def metadata_votes(metadata: Mapping[str, str]) -> list[FamilyVote]:
    """Family evidence from kohya / OneTrainer / modelspec metadata."""
    votes: list[FamilyVote] = []
    version = metadata.get("ss_base_model_version", "")
    for prefix, family in BASE_VERSION_PREFIXES:
        if version.startswith(prefix):
            reason = f"metadata ss_base_model_version={version!r} => {family}"
            votes.append(FamilyVote(family, reason))
            break
    if metadata.get("ss_v2") == "True":
        votes.append(FamilyVote(SD2, "metadata ss_v2='True' => sd2"))
    architecture = metadata.get("modelspec.architecture", "")
    if architecture:
        found = next((f for p, f in MODELSPEC_PREFIXES if architecture.startswith(p)), None)
        what = found or "not SD1/SD2/SDXL"
        votes.append(FamilyVote(found, f"modelspec.architecture={architecture!r} => {what}"))
    return votes


def family_from_metadata(metadata: Mapping[str, str]) -> BaseFamily | None:
    """The family metadata names (SDXL over SD2 over SD1); `ss_v2='False'` alone means SD1."""
    named = {vote.family for vote in metadata_votes(metadata)}
    for family in (SDXL, SD2, SD1):
        if family in named:
            return family
    return SD1 if metadata.get("ss_v2") == "False" else None
