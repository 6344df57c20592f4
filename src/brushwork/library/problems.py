"""What is wrong with a library entry, in words a user can act on."""

from __future__ import annotations

from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.library.entry import ModelEntry
from brushwork.library.layout import A1111_FOLDERS, COMFYUI_FOLDERS
from brushwork.library.walk import display_name

KIND_LABELS: dict[ModelKind, str] = {
    ModelKind.CHECKPOINT: "checkpoint",
    ModelKind.VAE: "VAE",
    ModelKind.LORA: "LoRA",
    ModelKind.EMBEDDING: "embedding",
    ModelKind.HYPERNETWORK: "hypernetwork",
}
_SD_VERSIONS = {"SD1": BaseFamily.SD1, "SD2": BaseFamily.SD2, "SDXL": BaseFamily.SDXL}


def misfiled_problem(entry: ModelEntry) -> str | None:
    kind = entry.kind
    if kind is None or not entry.is_misfiled:
        return None
    label, promised = KIND_LABELS[kind], KIND_LABELS[entry.folder_kind]
    home = entry.home_folder
    if _named_vae_beside_checkpoints(entry):
        return (
            f"is a {label}, but its name ends in .vae.* beside checkpoints, so A1111 takes it "
            f"for a VAE: rename it without .vae"
        )
    return (
        f"is a {label} but sits in {entry.folder} (the {promised} folder), where it will not "
        f"be used as a {label}: move it to {home}"
    )


def _named_vae_beside_checkpoints(entry: ModelEntry) -> bool:
    checkpoint_folders = {
        folder.name
        for folder in (*A1111_FOLDERS, *COMFYUI_FOLDERS)
        if folder.kind is ModelKind.CHECKPOINT
    }
    return (
        entry.folder_kind is ModelKind.VAE and entry.folder.rsplit("/", 1)[-1] in checkpoint_folders
    )


def layout_problems(entry: ModelEntry) -> list[str]:
    """Files of a known kind that A1111 cannot load as they are."""
    kind, layout = entry.kind, entry.identity.layout
    if kind is ModelKind.LORA and layout not in (None, "kohya"):
        return [
            f"uses {layout} key names; A1111 loads only kohya-named LoRA (lora_unet_*, lora_te_*)"
        ]
    if kind is ModelKind.VAE and layout == "diffusers":
        return ["uses diffusers key names; A1111 loads only LDM-named VAE files"]
    if kind is ModelKind.VAE and layout == "ldm-prefixed":
        return ["keeps the first_stage_model. prefix; A1111 loads VAE files without it"]
    if kind is ModelKind.HYPERNETWORK and entry.format is FileFormat.SAFETENSORS:
        return ["is a safetensors hypernetwork; A1111 loads hypernetworks only as .pt"]
    return []


def base_conflict(entry: ModelEntry) -> str | None:
    user = entry.sidecars.user
    if entry.base is None or user is None or user.sd_version is None:
        return None
    declared = _SD_VERSIONS.get(user.sd_version.upper())
    if declared is None or declared is entry.base:
        return None
    return (
        f"its {entry.name}.json says sd version {user.sd_version}, but its weights are {entry.base}"
    )


def hash_conflict(entry: ModelEntry) -> str | None:
    training = entry.identity.training
    recorded = training.tensor_hash if training else None
    if not recorded or not entry.addnet_hash or recorded == entry.addnet_hash:
        return None
    return (
        f"its metadata sshs_model_hash {recorded[:12]} differs from its tensor hash "
        f"{entry.addnet_hash[:12]} (the tensors changed after training); A1111 shows the "
        "metadata one"
    )


def find_problems(entry: ModelEntry) -> tuple[str, ...]:
    """Every problem of `entry`, most serious first."""
    problems: list[str] = []
    if entry.identity.error is not None:
        problems.append(entry.identity.error)
    misfiled = misfiled_problem(entry)
    if misfiled:
        problems.append(misfiled)
    problems += layout_problems(entry)
    problems += entry.sidecars.problems
    for problem in (base_conflict(entry), hash_conflict(entry)):
        if problem:
            problems.append(problem)
    if display_name(entry.path.name) != entry.path.name:
        problems.append("its file name is not valid UTF-8; rename it so every tool can open it")
    return tuple(problems)
