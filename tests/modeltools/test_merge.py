"""Checkpoint merging: A1111's formulas exactly, block weights, VAE bake, pruning, safety."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from brushwork.core.errors import ConfigError, IncompatibleModelError, ModelFileError
from brushwork.formats.checkpoint import read_checkpoint, write_checkpoint
from brushwork.formats.safeio import read_header
from brushwork.modeltools import merge as merge_module
from brushwork.modeltools import streamwrite
from brushwork.modeltools.blocks import block_label
from brushwork.modeltools.merge import (
    MergeMethod,
    MergeRequest,
    TextEncoderSource,
    merge_checkpoints,
)
from brushwork.testing.factory import build_components, components_checkpoint, write_vae_file

from .conftest import model_input

VAE = "first_stage_model."
TEXT = "cond_stage_model."


def _merge(tmp_path: Path, a: Path, b: Path, **options: object) -> tuple[Path, object]:
    out = tmp_path / "out.safetensors"
    request = MergeRequest(model_input(a), model_input(b), out, **options)  # type: ignore[arg-type]
    return out, merge_checkpoints(request)


def test_weighted_sum_at_zero_is_a_and_at_one_is_b_exactly(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a, b, _ = sd1_files
    tensors_a, tensors_b = load_file(a), load_file(b)
    for alpha, expected in ((0.0, tensors_a), (1.0, tensors_b)):
        out, _ = _merge(tmp_path, a, b, alpha=alpha, overwrite=True)
        merged = load_file(out)
        assert merged.keys() == expected.keys()
        assert all(torch.equal(merged[k], expected[k]) for k in expected)


def test_weighted_sum_and_add_difference_follow_the_formulas(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a, b, c = sd1_files
    ta, tb, tc = load_file(a), load_file(b), load_file(c)
    out, _ = _merge(tmp_path, a, b, alpha=0.3)
    merged = load_file(out)
    for key in ta:
        torch.testing.assert_close(merged[key], ta[key] * 0.7 + tb[key] * 0.3, rtol=0, atol=1e-6)
    request = MergeRequest(
        model_input(a),
        model_input(b),
        tmp_path / "diff.safetensors",
        tertiary=model_input(c),
        method=MergeMethod.ADD_DIFFERENCE,
        alpha=0.6,
    )
    result = merge_checkpoints(request)
    merged = load_file(result.path)
    assert result.merged == len(ta)
    for key in ta:
        expected = ta[key] + (tb[key] - tc[key]) * 0.6
        torch.testing.assert_close(merged[key], expected, rtol=0, atol=1e-6)


def test_block_weights_change_only_their_blocks(tmp_path: Path, sd1_files: list[Path]) -> None:
    a, b, _ = sd1_files
    ta, tb = load_file(a), load_file(b)
    # the tiny UNet has IN00-IN03, M00, OUT00-OUT03: take IN01 and OUT02 from B, the rest from A
    weights = (0, 1, 0, 0, 0, 0, 0, 1, 0)
    out, _ = _merge(tmp_path, a, b, alpha=0.0, block_weights=weights)
    merged = load_file(out)
    from_b = {k for k in ta if block_label(k) in ("IN01", "OUT02")}
    assert from_b and len(from_b) < len(ta)
    for key in ta:
        assert torch.equal(merged[key], tb[key] if key in from_b else ta[key]), key


def test_block_weights_of_the_wrong_count_are_refused_with_the_count(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a, b, _ = sd1_files
    with pytest.raises(ConfigError, match=r"25 block weights given; this model has 9 UNet blocks"):
        _merge(tmp_path, a, b, block_weights=(0.5,) * 25)
    assert not (tmp_path / "out.safetensors").exists()


def test_different_families_are_refused(
    tmp_path: Path, sd1_files: list[Path], sdxl_file: Path
) -> None:
    with pytest.raises(IncompatibleModelError, match=r"SD1 model and xl\.safetensors is an SDXL"):
        _merge(tmp_path, sd1_files[0], sdxl_file)
    assert list(tmp_path.iterdir()) == []


def _with_ema_and_buffers(tmp_path: Path) -> Path:
    """A checkpoint whose UNet also has an EMA copy, plus a DDPM buffer."""
    checkpoint = components_checkpoint(build_components("sd1", seed=5))
    checkpoint.ema_unet = {k: v * 1.01 for k, v in checkpoint.unet.items()}
    checkpoint.extra["alphas_cumprod"] = torch.linspace(1, 0.01, 1000)
    path = tmp_path / "ema.safetensors"
    write_checkpoint(path, checkpoint)
    return path


def test_keys_only_in_a_are_kept_and_reported_and_prune_drops_ema(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a = _with_ema_and_buffers(tmp_path)
    ta = load_file(a)
    out, result = _merge(tmp_path, a, sd1_files[1], alpha=0.5)
    merged = load_file(out)
    ema = [k for k in ta if k.startswith("model_ema.")]
    assert ema and set(result.only_in_primary) == set(ema)  # type: ignore[attr-defined]
    assert all(torch.equal(merged[k], ta[k]) for k in ema)
    assert torch.equal(merged["alphas_cumprod"], ta["alphas_cumprod"])  # not a model weight
    pruned_out = tmp_path / "pruned.safetensors"
    request = MergeRequest(model_input(a), model_input(sd1_files[1]), pruned_out, prune=True)
    pruned = merge_checkpoints(request)
    assert not any(k.startswith("model_ema.") for k in read_header(pruned_out).tensors)
    assert set(pruned.pruned) == set(ema)
    assert read_checkpoint(pruned_out).ema_unet is None


def test_the_recipe_is_recorded_in_metadata_and_sidecar(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a, b, _ = sd1_files
    out, result = _merge(tmp_path, a, b, alpha=0.25, precision="fp16")
    metadata = read_header(out).metadata
    recipe = json.loads(metadata["sd_merge_recipe"])
    assert recipe["interp_method"] == "Weighted sum"
    assert recipe["multiplier"] == 0.25
    assert recipe["save_as_half"] is True
    models = json.loads(metadata["sd_merge_models"])
    sha_a = recipe["primary_model_hash"]
    assert set(models) == {sha_a, recipe["secondary_model_hash"]}
    assert models[sha_a]["name"] == "a.safetensors" and len(models[sha_a]["legacy_hash"]) == 8
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["description"] == "0.75(a) + 0.25(b)"
    assert sidecar["sd version"] == "SD1"
    assert sidecar["recipe"]["inputs"]["B"]["sha256"] == recipe["secondary_model_hash"]
    assert result.sidecar == tmp_path / "out.json"  # type: ignore[attr-defined]
    assert {t.dtype for t in load_file(out).values()} == {torch.float16}


def test_a_merge_of_merges_keeps_the_whole_history(tmp_path: Path, sd1_files: list[Path]) -> None:
    a, b, c = sd1_files
    first, _ = _merge(tmp_path, a, b)
    second = tmp_path / "second.safetensors"
    merge_checkpoints(MergeRequest(model_input(first), model_input(c), second))
    models = json.loads(read_header(second).metadata["sd_merge_models"])
    assert len(models) == 4  # a, b, the first merge, c
    first_entry = next(v for v in models.values() if v["name"] == "out.safetensors")
    assert first_entry["sd_merge_recipe"]["interp_method"] == "Weighted sum"


def test_a_vae_is_baked_and_the_text_encoder_taken_from_b(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a, b, _ = sd1_files
    vae_path = write_vae_file(build_components("sd1", seed=9), tmp_path / "v.vae.safetensors")
    vae = load_file(vae_path)
    ta, tb = load_file(a), load_file(b)
    out, result = _merge(
        tmp_path, a, b, alpha=0.5, vae=model_input(vae_path), text_encoder_from=TextEncoderSource.B
    )
    merged = load_file(out)
    for key in ta:
        if key.startswith(VAE):
            assert torch.equal(merged[key], vae[key.removeprefix(VAE)])
        elif key.startswith(TEXT):
            assert torch.equal(merged[key], tb[key])
        else:
            torch.testing.assert_close(merged[key], (ta[key] + tb[key]) * 0.5, rtol=0, atol=1e-6)
    assert result.vae_baked == len(vae)  # type: ignore[attr-defined]


def test_an_inpainting_a_merges_its_first_four_channels(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a, b, _ = sd1_files
    tensors = load_file(a)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    extra = torch.randn(tensors[key].shape[0], 5, *tensors[key].shape[2:])
    tensors[key] = torch.cat([tensors[key], extra], 1)
    inpainting = tmp_path / "inpaint.safetensors"
    save_file(tensors, inpainting)
    out, result = _merge(tmp_path, inpainting, b, alpha=0.5)
    merged = load_file(out)[key]
    expected = (tensors[key][:, :4] + load_file(b)[key]) * 0.5
    torch.testing.assert_close(merged[:, :4], expected, rtol=0, atol=1e-6)
    assert torch.equal(merged[:, 4:], extra)
    assert result.recipe["is_inpainting"] is True  # type: ignore[attr-defined]
    with pytest.raises(IncompatibleModelError, match="put the inpainting"):
        merge_checkpoints(
            MergeRequest(model_input(b), model_input(inpainting), tmp_path / "x.safetensors")
        )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".tmp", ".json"))


def test_a_failed_write_leaves_no_file(
    tmp_path: Path, sd1_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = sd1_files
    calls = {"n": 0}
    real = streamwrite.write_tensor_bytes

    def disk_full(handle: object, tensor: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, tensor)  # type: ignore[arg-type]

    monkeypatch.setattr(streamwrite, "write_tensor_bytes", disk_full)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="No space left"):
        merge_checkpoints(MergeRequest(model_input(a), model_input(b), out / "m.safetensors"))
    assert calls["n"] > 20 and _leftovers(out) == []


def test_a_bad_input_leaves_no_file(tmp_path: Path, sd1_files: list[Path]) -> None:
    a, b, _ = sd1_files
    truncated = tmp_path / "broken.safetensors"
    data = b.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelFileError, match=r"broken\.safetensors"):
        merge_checkpoints(
            MergeRequest(model_input(a), model_input(truncated), out / "m.safetensors")
        )
    assert _leftovers(out) == []


def test_inputs_are_never_overwritten_and_outputs_only_when_asked(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    a, b, _ = sd1_files
    with pytest.raises(ConfigError, match="is one of the inputs"):
        merge_checkpoints(MergeRequest(model_input(a), model_input(b), a, overwrite=True))
    _merge(tmp_path, a, b)
    with pytest.raises(ConfigError, match="already exists"):
        _merge(tmp_path, a, b)


def test_pickle_inputs_and_output(tmp_path: Path, sd1_files: list[Path]) -> None:
    a, b, _ = sd1_files
    checkpoint = read_checkpoint(b)
    pickled = tmp_path / "b.ckpt"
    write_checkpoint(pickled, checkpoint, write_yaml=False)
    out = tmp_path / "m.ckpt"
    merge_checkpoints(MergeRequest(model_input(a), model_input(pickled), out, alpha=1.0))
    merged = read_checkpoint(out)
    assert all(torch.equal(merged.unet[k], checkpoint.unet[k]) for k in checkpoint.unet)


def test_progress_is_reported_per_tensor(tmp_path: Path, sd1_files: list[Path]) -> None:
    a, b, _ = sd1_files
    seen: list[tuple[str, int, int]] = []
    request = MergeRequest(model_input(a), model_input(b), tmp_path / "m.safetensors")
    result = merge_checkpoints(request, lambda *event: seen.append(event))
    assert seen[-1] == ("merging", result.merged, result.merged)
    assert merge_module.MergeMethod("add-difference") is MergeMethod.ADD_DIFFERENCE
