"""Textual-inversion embeddings: every layout A1111 reads, our writers, and diffusers' loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from brushwork.core.errors import (
    BrushworkError,
    ConfigError,
    CorruptModelError,
    UnsupportedModelError,
    WrongKindError,
)
from brushwork.core.kinds import BaseFamily
from brushwork.formats import safeio
from brushwork.formats.embedding import (
    TEXT_ENCODER,
    TEXT_ENCODER_2,
    Embedding,
    read_embedding,
    write_embedding,
)


def _vectors(count: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def _embedding(name: str, widths: tuple[int, ...], count: int = 3, **extra: Any) -> Embedding:
    slots = (TEXT_ENCODER, TEXT_ENCODER_2)
    vectors = {
        slot: _vectors(count, w, seed=i)
        for i, (slot, w) in enumerate(zip(slots, widths, strict=False))
    }
    return Embedding(name=name, vectors=vectors, **extra)


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(
    ("widths", "family", "width"),
    [((768,), BaseFamily.SD1, 768), ((1024,), BaseFamily.SD2, 1024)],
)
@pytest.mark.parametrize(
    ("fmt", "filename"),
    [
        ("a1111", "trigger.pt"),
        ("safetensors", "trigger.safetensors"),
        ("diffusers", "trigger.safetensors"),
        ("diffusers", "trigger.bin"),
    ],
)
def test_single_encoder_round_trip(
    tmp_path: Path,
    fmt: str,
    filename: str,
    widths: tuple[int, ...],
    family: BaseFamily,
    width: int,
) -> None:
    original = _embedding("trigger", widths, count=4)
    write_embedding(tmp_path / filename, original, format=fmt)

    loaded = read_embedding(tmp_path / filename)

    assert loaded.name == "trigger"
    assert loaded.source_format == fmt
    assert (loaded.num_vectors, loaded.width, loaded.family) == (4, width, family)
    assert torch.equal(loaded.vectors[TEXT_ENCODER], original.vectors[TEXT_ENCODER])


def test_sdxl_round_trip_keeps_both_encoders(tmp_path: Path) -> None:
    original = _embedding("xl", (768, 1280), count=2)
    write_embedding(tmp_path / "xl.safetensors", original, format="safetensors")

    stored = safeio.read_safetensors(tmp_path / "xl.safetensors").tensors
    loaded = read_embedding(tmp_path / "xl.safetensors")

    assert set(stored) == {"clip_l", "clip_g"}
    assert (loaded.num_vectors, loaded.width, loaded.family) == (2, 2048, BaseFamily.SDXL)
    for slot in (TEXT_ENCODER, TEXT_ENCODER_2):
        assert torch.equal(loaded.vectors[slot], original.vectors[slot])


@pytest.mark.parametrize("fmt", ["a1111", "diffusers"])
def test_sdxl_embedding_refuses_single_encoder_formats(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(ConfigError, match="SDXL"):
        write_embedding(tmp_path / "xl.pt", _embedding("xl", (768, 1280)), format=fmt)


def test_a1111_file_has_exactly_a1111_layout(tmp_path: Path) -> None:
    embedding = _embedding("style", (768,), step=1500, sd_checkpoint="abcdef0123")
    write_embedding(tmp_path / "style.pt", embedding, format="a1111")

    raw = safeio.read_pickle(tmp_path / "style.pt")

    assert set(raw) == {
        "string_to_token",
        "string_to_param",
        "name",
        "step",
        "sd_checkpoint",
        "sd_checkpoint_name",
    }
    assert raw["string_to_token"] == {"*": 265}
    assert list(raw["string_to_param"]) == ["*"]
    assert type(raw["string_to_param"]["*"]) is torch.Tensor
    assert (raw["name"], raw["step"], raw["sd_checkpoint"]) == ("style", 1500, "abcdef0123")
    loaded = read_embedding(tmp_path / "style.pt")
    assert (loaded.step, loaded.sd_checkpoint, loaded.sd_checkpoint_name) == (
        1500,
        "abcdef0123",
        None,
    )


def test_trigger_word_is_file_stem_not_stored_name(tmp_path: Path) -> None:
    write_embedding(tmp_path / "renamed-by-user.pt", _embedding("original", (768,)))

    loaded = read_embedding(tmp_path / "renamed-by-user.pt")

    assert loaded.name == "renamed-by-user"
    assert loaded.stored_name == "original"


def test_reads_a1111_file_with_parameter_dict(tmp_path: Path) -> None:
    vectors = _vectors(2, 768)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": params, "name": "old", "step": 7},
        tmp_path / "old.pt",
    )

    loaded = read_embedding(tmp_path / "old.pt")

    assert torch.equal(loaded.vectors[TEXT_ENCODER], vectors)
    assert not loaded.vectors[TEXT_ENCODER].requires_grad
    assert (loaded.step, loaded.stored_name, loaded.sd_checkpoint) == (7, "old", None)


@pytest.mark.parametrize(
    ("key", "fmt", "stored_name"),
    [("<cat-toy>", "diffusers", "<cat-toy>"), ("emp_params", "safetensors", None)],
)
def test_reads_single_tensor_files_with_one_dimensional_vector(
    tmp_path: Path, key: str, fmt: str, stored_name: str | None
) -> None:
    torch.save({key: torch.ones(768)}, tmp_path / "learned_embeds.bin")

    loaded = read_embedding(tmp_path / "learned_embeds.bin")

    assert (loaded.name, loaded.stored_name, loaded.source_format) == (
        "learned_embeds",
        stored_name,
        fmt,
    )
    assert loaded.vectors[TEXT_ENCODER].shape == (1, 768)


def test_safetensors_metadata_is_kept(tmp_path: Path) -> None:
    save_file(
        {"emb_params": _vectors(2, 768)},
        str(tmp_path / "k.safetensors"),
        metadata={"modelspec.title": "k"},
    )

    loaded = read_embedding(tmp_path / "k.safetensors")
    write_embedding(tmp_path / "copy.safetensors", loaded, format="safetensors")

    assert safeio.read_header(tmp_path / "copy.safetensors").metadata == {"modelspec.title": "k"}


def test_write_refuses_to_replace_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "e.pt"
    write_embedding(target, _embedding("e", (768,)))
    with pytest.raises(BrushworkError, match="already exists"):
        write_embedding(target, _embedding("e", (768,)))
    write_embedding(target, _embedding("e", (768,), count=5), overwrite=True)
    assert read_embedding(target).num_vectors == 5


def test_write_checks_format_against_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pickle"):
        write_embedding(tmp_path / "e.safetensors", _embedding("e", (768,)), format="a1111")
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        write_embedding(tmp_path / "e.pt", _embedding("e", (768,)), format="safetensors")
    with pytest.raises(ConfigError, match="unknown embedding format"):
        write_embedding(tmp_path / "e.pt", _embedding("e", (768,)), format="kohya")


def test_embedding_refuses_inconsistent_vectors() -> None:
    with pytest.raises(ValueError, match="different numbers of vectors"):
        Embedding("x", {TEXT_ENCODER: _vectors(2, 768), TEXT_ENCODER_2: _vectors(3, 1280)})
    with pytest.raises(ValueError, match="keyed"):
        Embedding("x", {"clip_l": _vectors(2, 768)})


# ---------------------------------------------------------------------------------------------
# malformed input


def test_multiple_terms_in_string_to_param_is_an_error(tmp_path: Path) -> None:
    torch.save(
        {"string_to_param": {"a": _vectors(1, 768), "b": _vectors(1, 768)}}, tmp_path / "two.pt"
    )
    with pytest.raises(CorruptModelError, match="2 terms") as info:
        read_embedding(tmp_path / "two.pt")
    assert info.value.path == tmp_path / "two.pt"


def test_multi_token_diffusers_file_is_an_error(tmp_path: Path) -> None:
    save_file({"<a>": _vectors(1, 768), "<b>": _vectors(1, 768)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(CorruptModelError, match="holds 2 embeddings"):
        read_embedding(tmp_path / "two.safetensors")


def test_sdxl_file_with_unequal_vector_counts_is_an_error(tmp_path: Path) -> None:
    save_file(
        {"clip_l": _vectors(2, 768), "clip_g": _vectors(3, 1280)}, str(tmp_path / "x.safetensors")
    )
    with pytest.raises(CorruptModelError, match="2 clip_l vectors but 3 clip_g"):
        read_embedding(tmp_path / "x.safetensors")


def test_lora_file_is_the_wrong_kind(tmp_path: Path) -> None:
    lora = {
        f"lora_unet_down_blocks_0_attentions_0_proj_in.{part}": torch.zeros(4, 4)
        for part in ("lora_down.weight", "lora_up.weight")
    }
    save_file(lora, str(tmp_path / "lora.safetensors"))
    with pytest.raises(WrongKindError, match="LoRA"):
        read_embedding(tmp_path / "lora.safetensors")


def test_checkpoint_file_is_the_wrong_kind(tmp_path: Path) -> None:
    keys = [f"model.diffusion_model.input_blocks.{i}.0.weight" for i in range(20)]
    torch.save({"state_dict": {k: torch.zeros(2) for k in keys}}, tmp_path / "model.ckpt")
    with pytest.raises(WrongKindError, match="20 tensors with UNet keys"):
        read_embedding(tmp_path / "model.ckpt")


def test_hypernetwork_file_is_the_wrong_kind(tmp_path: Path) -> None:
    torch.save({768: ({}, {}), "layer_structure": [1, 2, 1]}, tmp_path / "hn.pt")
    with pytest.raises(WrongKindError, match="hypernetwork"):
        read_embedding(tmp_path / "hn.pt")


def test_garbage_and_odd_shapes_are_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 not a model at all" * 10)
    with pytest.raises(CorruptModelError):
        read_embedding(tmp_path / "junk.pt")
    torch.save({"string_to_param": {"*": torch.zeros(2, 3, 4)}}, tmp_path / "cube.pt")
    with pytest.raises(CorruptModelError, match=r"shape \[2, 3, 4\]"):
        read_embedding(tmp_path / "cube.pt")
    torch.save({"notes": "hello"}, tmp_path / "dict.pt")
    with pytest.raises(CorruptModelError, match="neither a textual-inversion embedding"):
        read_embedding(tmp_path / "dict.pt")


def test_embedding_in_an_image_is_reported_unsupported(tmp_path: Path) -> None:
    (tmp_path / "emb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    with pytest.raises(UnsupportedModelError, match="inside images"):
        read_embedding(tmp_path / "emb.png")


# ---------------------------------------------------------------------------------------------
# cross-check: what we write loads in diffusers, with the same vectors


@pytest.fixture
def tiny_sd1_pipeline() -> Any:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from brushwork.testing.factory import build_components, tokenizer

    components = build_components("sd1")
    return StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoders["text_encoder"],
        tokenizer=tokenizer(),
        unet=components.unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.mark.parametrize(
    ("fmt", "filename"),
    [
        ("a1111", "mine.pt"),
        ("safetensors", "mine.safetensors"),
        ("diffusers", "mine.safetensors"),
        ("diffusers", "learned_embeds.bin"),
    ],
)
def test_diffusers_loads_what_we_write(
    tmp_path: Path, tiny_sd1_pipeline: Any, fmt: str, filename: str
) -> None:
    pipe = tiny_sd1_pipeline
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    embedding = _embedding("mine", (width,), count=3)
    write_embedding(tmp_path / filename, embedding, format=fmt)

    pipe.load_textual_inversion(str(tmp_path / filename), token="<mine>")

    tokens = ["<mine>", "<mine>_1", "<mine>_2"]
    ids = pipe.tokenizer.convert_tokens_to_ids(tokens)
    rows = pipe.text_encoder.get_input_embeddings().weight[ids]
    assert torch.equal(rows.detach(), embedding.vectors[TEXT_ENCODER])
    prompt = pipe.maybe_convert_prompt("a photo of <mine>", pipe.tokenizer)
    assert prompt == "a photo of <mine> <mine>_1 <mine>_2"
