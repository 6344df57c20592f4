"""Metadata: kohya `ss_*` and modelspec, checkpoint contents, and A1111 / Civitai sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.formats.safeio import write_pickle, write_safetensors
from brushwork.library.catalog import Library
from brushwork.library.entry import ModelEntry
from brushwork.library.sidecars import read_sidecars

from .conftest import checkpoint_tensors, lora_tensors, place, write_lora

TAG_FREQUENCY = {
    "10_mychar": {"mychar": 40, "1girl": 38, "smile": 12, "solo": 30},
    "5_extra": {"mychar": 5, " outdoors": 9, "smile": 2},
}
KOHYA_METADATA = {
    "ss_output_name": "my-character",
    "ss_network_module": "networks.lora",
    "ss_network_dim": "4",
    "ss_network_alpha": "2.0",
    "ss_base_model_version": "sd_v1",
    "ss_resolution": "(512, 512)",
    "ss_num_epochs": "10",
    "ss_epoch": "8",
    "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
    "ss_tag_frequency": json.dumps(TAG_FREQUENCY),
    "modelspec.title": "My Character",
    "modelspec.architecture": "stable-diffusion-v1/lora",
    "modelspec.thumbnail": "data:image/png;base64,AAAA",
}


def _only(settings: Settings, root: Path) -> ModelEntry:
    with Library.open(settings, [root]) as library:
        (entry,) = library.scan().entries
    return entry


def test_kohya_metadata_and_trigger_words_from_tag_frequency(
    settings: Settings, root: Path
) -> None:
    write_lora(_lora_path(root), KOHYA_METADATA)
    entry = _only(settings, root)
    training = entry.identity.training
    assert training is not None
    assert entry.alias == "my-character"
    assert (training.network_dim, training.network_alpha) == (4, 2.0)
    assert training.base_model_version == "sd_v1"
    assert (training.resolution, training.num_epochs, training.epoch) == ("(512, 512)", 10, 8)
    assert training.training_model == "v1-5-pruned-emaonly.safetensors"
    assert training.top_tags[:3] == (("mychar", 45), ("1girl", 38), ("solo", 30))
    assert entry.trigger_words == ("mychar", "1girl", "solo", "smile", "outdoors")
    assert training.modelspec == {
        "title": "My Character",
        "architecture": "stable-diffusion-v1/lora",
    }


def _lora_path(root: Path) -> Path:
    path = root / "models/Lora/char.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_tag_frequency_inside_ss_datasets_is_read(settings: Settings, root: Path) -> None:
    datasets = [{"tag_frequency": {"1_x": {"rare": 1, "common": 7}}}]
    write_lora(_lora_path(root), {"ss_datasets": json.dumps(datasets)})
    assert _only(settings, root).trigger_words == ("common", "rare")


def test_bad_metadata_values_are_left_out(settings: Settings, root: Path) -> None:
    write_lora(_lora_path(root), {"ss_network_dim": "None", "ss_tag_frequency": "{not json"})
    entry = _only(settings, root)
    assert entry.identity.training is not None
    assert entry.identity.training.network_dim is None
    assert entry.trigger_words == ()
    assert entry.problems == ()


def test_checkpoint_baked_vae_ema_and_precision(settings: Settings, root: Path) -> None:
    folder = root / "models/Stable-diffusion"
    folder.mkdir(parents=True)
    tensors = {
        k: v.half() for k, v in checkpoint_tensors(ema=True).items() if v.is_floating_point()
    }
    tensors["model.diffusion_model.extra_fp32"] = torch.zeros(3)
    write_pickle(folder / "ema.ckpt", {"state_dict": tensors, "global_step": 5})
    no_vae = {k: v for k, v in checkpoint_tensors().items() if "first_stage" not in k}
    write_safetensors(folder / "plain.safetensors", no_vae)
    with Library.open(settings, [root]) as library:
        ema, plain = library.scan().entries
    assert ema.identity.tensors is not None and plain.identity.tensors is not None
    assert (ema.identity.tensors.baked_vae, ema.identity.tensors.ema) == (True, True)
    assert ema.identity.tensors.precision == "fp16"
    halves = sum(t.numel() for t in tensors.values() if t.dtype == torch.float16)
    assert ema.identity.tensors.dtypes == {"fp16": halves, "fp32": 3}
    assert (plain.identity.tensors.baked_vae, plain.identity.tensors.ema) == (False, False)
    assert plain.identity.tensors.precision == "fp32"
    assert plain.identity.tensors.parameter_count == sum(t.numel() for t in no_vae.values())


def test_a1111_sidecars(settings: Settings, root: Path) -> None:
    path = write_lora(_lora_path(root), {"ss_output_name": "x"})
    folder = path.parent
    (folder / "char.json").write_text(
        json.dumps(
            {
                "description": "from json",
                "notes": "my notes",
                "activation text": "mychar, red hair",
                "negative text": "blurry",
                "preferred weight": 0.7,
                "sd version": "SD1",
                "vae": "None",
            },
            indent=4,
        )
    )
    (folder / "char.txt").write_text("from txt")
    (folder / "char.preview.png").write_bytes(b"\x89PNG")
    (folder / "char.webp").write_bytes(b"RIFF")
    entry = _only(settings, root)
    sidecars, user = entry.sidecars, entry.sidecars.user
    assert user is not None
    assert (user.activation_text, user.preferred_weight, user.sd_version) == (
        "mychar, red hair",
        0.7,
        "SD1",
    )
    assert (user.notes, user.negative_text, user.vae) == ("my notes", "blurry", "None")
    assert sidecars.description == "from json"  # the .json's description wins over .txt
    assert sidecars.preview == "char.preview.png"  # png (plain, then .preview) before webp
    assert entry.trigger_words == ("mychar, red hair",)
    assert entry.problems == ()


def test_preview_and_description_order(tmp_path: Path) -> None:
    names = {"m.safetensors", "m.preview.png", "m.png", "m.description.txt", "m.yaml"}
    (tmp_path / "m.description.txt").write_text("described\n")
    sidecars = read_sidecars(tmp_path, "m.safetensors", names)
    assert sidecars.preview == "m.png"
    assert sidecars.description == "described"
    assert sidecars.config == "m.yaml"  # a checkpoint's model config
    assert read_sidecars(tmp_path, "m.safetensors", {"m.safetensors"}).files == ()


def test_civitai_helper_info(settings: Settings, root: Path) -> None:
    folder = root / "embeddings"
    place(root, "embeddings/easyneg.pt", "embedding")
    info = {
        "id": 9208,
        "modelId": 7808,
        "name": "EasyNegative",
        "baseModel": "SD 1.5",
        "trainedWords": ["easynegative", " "],
        "model": {"name": "EasyNegative", "type": "TextualInversion", "nsfw": False},
        "files": [{"hashes": {"AutoV2": "C74B4E810B"}}],
    }
    (folder / "easyneg.civitai.info").write_text(json.dumps(info, indent=4))
    entry = _only(settings, root)
    civitai = entry.sidecars.civitai
    assert civitai is not None
    assert (civitai.model_name, civitai.model_type, civitai.base_model) == (
        "EasyNegative",
        "TextualInversion",
        "SD 1.5",
    )
    assert (civitai.model_id, civitai.version_id) == (7808, 9208)
    assert entry.trigger_words == ("easyneg", "easynegative")  # the file stem comes first


def test_broken_sidecars_and_contradictions_are_problems(settings: Settings, root: Path) -> None:
    path = write_lora(_lora_path(root))
    (path.parent / "char.json").write_text(json.dumps({"sd version": "SDXL"}))
    (path.parent / "char.civitai.info").write_text("{truncated")
    entry = _only(settings, root)
    assert entry.kind is ModelKind.LORA
    assert entry.problems[0].startswith("sidecar char.civitai.info is not valid JSON")
    assert entry.problems[1] == "its char.json says sd version SDXL, but its weights are sd1"


def test_modelspec_trigger_phrase(settings: Settings, root: Path) -> None:
    write_safetensors(_lora_path(root), lora_tensors(), {"modelspec.trigger_phrase": "zzz style"})
    assert _only(settings, root).trigger_words == ("zzz style",)
