"""`brushwork inspect` on real files of each kind, and its refusals (exit code 2, no traceback)."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from brushwork.cli.main import app
from brushwork.formats import safeio

runner = CliRunner(env={"COLUMNS": "200"})


def _inspect(*args: str) -> Result:
    return runner.invoke(app, ["inspect", *args])


def _inspect_json(path: Path) -> dict[str, Any]:
    result = _inspect(str(path), "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _kohya_module(name: str, rank: int, width_in: int, width_out: int) -> dict[str, torch.Tensor]:
    return {
        f"{name}.lora_down.weight": torch.zeros(rank, width_in, dtype=torch.float16),
        f"{name}.lora_up.weight": torch.zeros(width_out, rank, dtype=torch.float16),
        f"{name}.alpha": torch.tensor(rank / 2, dtype=torch.float16),
    }


@pytest.fixture
def kohya_lora(tmp_path: Path) -> Path:
    """An SD1 kohya LoRA: 2 text-encoder modules + 2 UNet cross-attention modules, dim 8."""
    tensors: dict[str, torch.Tensor] = {}
    for proj in ("q_proj", "v_proj"):
        tensors |= _kohya_module(
            f"lora_te_text_model_encoder_layers_0_self_attn_{proj}", 8, 768, 768
        )
    for proj in ("to_k", "to_v"):
        tensors |= _kohya_module(
            f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_{proj}", 8, 768, 320
        )
    metadata = {
        "ss_output_name": "inkwash_style",
        "ss_network_dim": "8",
        "ss_network_alpha": "4.0",
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_tag_frequency": json.dumps(
            {
                "10_inkwash": {"ink wash": 40, "mountain": 12, "[sic] tag": 3},
                "2_reg": {"mountain": 5},
            }
        ),
    }
    path = tmp_path / "inkwash.safetensors"
    safeio.write_safetensors(path, tensors, metadata)
    return path


def test_lora_json_has_kind_base_and_kohya_summary(kohya_lora: Path) -> None:
    report = _inspect_json(kohya_lora)

    assert (report["kind"], report["base"], report["format"]) == ("lora", "sd1", "safetensors")
    assert report["tensors"] == 12
    assert report["parameters"] == 2 * (8 * 768 + 768 * 8 + 1) + 2 * (8 * 768 + 320 * 8 + 1)
    assert report["precision"] == {"F16": 12}
    assert report["size"] == kohya_lora.stat().st_size
    assert report["metadata"]["ss_output_name"] == "inkwash_style"
    summary = report["summary"]
    assert (summary["modules"], summary["unet_modules"], summary["text_encoder_modules"]) == (
        4,
        2,
        2,
    )
    assert (summary["dim"], summary["alpha"], summary["alpha_source"]) == (8, 4.0, "tensors")
    assert summary["output_name"] == "inkwash_style"
    assert summary["top_tags"][:2] == [["ink wash", 40], ["mountain", 17]]


def test_lora_table_for_people(kohya_lora: Path) -> None:
    result = _inspect(str(kohya_lora))

    assert result.exit_code == 0, result.output
    for expected in ("lora", "sd1", "kohya", "inkwash_style", "ink wash (40)", "[sic] tag (3)"):
        assert expected in result.stdout
    assert "F16 x 12" in result.stdout
    assert "ss_base_model_version='sd_v1' => sd1" in result.stdout


def test_lora_alpha_from_metadata_when_no_alpha_tensors(tmp_path: Path) -> None:
    tensors = {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(
            4, 768
        ),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(768, 4),
    }
    path = tmp_path / "old.safetensors"
    safeio.write_safetensors(path, tensors, {"ss_network_alpha": "2"})

    summary = _inspect_json(path)["summary"]

    assert (summary["dim"], summary["alpha"], summary["alpha_source"]) == (4, 2.0, "metadata")


def test_a1111_embedding_pt(tmp_path: Path) -> None:
    path = tmp_path / "badhands.pt"
    safeio.write_pickle(
        path,
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.zeros(3, 768)},
            "name": "badhands",
            "step": 1500,
            "sd_checkpoint": "e1441589a6",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
    )

    report = _inspect_json(path)

    assert (report["kind"], report["base"], report["format"]) == ("embedding", "sd1", "pickle")
    assert report["metadata"] == {}
    summary = report["summary"]
    assert (summary["vectors"], summary["width"]) == (3, 768)
    assert (summary["name"], summary["step"], summary["trained_on"]) == (
        "badhands",
        1500,
        "v1-5-pruned-emaonly",
    )


def test_sdxl_embedding_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "sdxl-neg.safetensors"
    safeio.write_safetensors(path, {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)})

    report = _inspect_json(path)

    assert (report["kind"], report["base"]) == ("embedding", "sdxl")
    assert report["summary"]["parts"] == {"clip_l": 768, "clip_g": 1280}
    assert (report["summary"]["vectors"], report["summary"]["width"]) == (2, 2048)


def _write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """An F16 safetensors file of full-size shapes whose data region is a hole (no disk used)."""
    entries: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        entries[name] = {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header = json.dumps(entries).encode()
    with path.open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
    os.truncate(path, 8 + len(header) + offset)


SD15_CHECKPOINT_KEYS: dict[str, tuple[int, ...]] = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "model_ema.decay": (),
    "model_ema.diffusion_modelinput_blocks00weight": (320, 4, 3, 3),
    "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
    "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
    "first_stage_model.post_quant_conv.weight": (4, 4, 1, 1),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
}


def test_checkpoint_is_summarised_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "v1-5.safetensors"
    _write_sparse_safetensors(path, SD15_CHECKPOINT_KEYS)

    report = _inspect_json(path)

    assert (report["kind"], report["base"], report["layout"]) == ("checkpoint", "sd1", "ldm")
    assert report["precision"] == {"F16": len(SD15_CHECKPOINT_KEYS)}
    assert report["parameters"] == sum(math.prod(s) for s in SD15_CHECKPOINT_KEYS.values())
    summary = report["summary"]
    assert summary["has_ema"] is True
    assert summary["has_vae"] is True
    assert summary["unet_in_channels"] == 4
    assert summary["text_encoders"] == [
        {"prefix": "cond_stage_model.transformer", "name": "CLIP ViT-L/14", "width": 768}
    ]
    table = _inspect(str(path))
    assert "CLIP ViT-L/14 at cond_stage_model.transformer" in table.stdout
    assert "EMA weights" in table.stdout


def test_checkpoint_ckpt_pickle(tmp_path: Path) -> None:
    path = tmp_path / "tiny.ckpt"
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
        "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 32, 3, 3),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(64),
    }
    safeio.write_pickle(path, {"state_dict": tensors, "global_step": 7})

    report = _inspect_json(path)

    assert (report["kind"], report["base"], report["format"]) == ("checkpoint", "sd1", "pickle")
    assert report["summary"]["has_ema"] is False
    assert report["summary"]["text_encoders"][0]["name"] == "CLIP (64 wide)"


def test_vae(tmp_path: Path) -> None:
    path = tmp_path / "vae-ft-mse.safetensors"
    tensors = {
        "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3, dtype=torch.bfloat16),
        "encoder.down.0.block.0.conv1.weight": torch.zeros(8, 8, 3, 3, dtype=torch.bfloat16),
        "decoder.up.0.block.0.conv1.weight": torch.zeros(8, 8, 3, 3, dtype=torch.bfloat16),
        "quant_conv.weight": torch.zeros(8, 8, 1, 1),
        "post_quant_conv.weight": torch.zeros(4, 4, 1, 1),
    }
    safeio.write_safetensors(path, tensors)

    report = _inspect_json(path)

    assert (report["kind"], report["base"], report["layout"]) == ("vae", None, "ldm")
    assert report["precision"] == {"BF16": 3, "F32": 2}
    assert report["summary"] == {"latent_channels": 4, "a1111_loadable": True}
    assert "unknown" in _inspect(str(path)).stdout  # the base family, said plainly


def test_hypernetwork_pt(tmp_path: Path) -> None:
    def mlp(width: int) -> dict[str, torch.Tensor]:
        return {
            "linear.0.weight": torch.zeros(2 * width, width),
            "linear.0.bias": torch.zeros(2 * width),
            "linear.2.weight": torch.zeros(width, 2 * width),
            "linear.2.bias": torch.zeros(width),
        }

    path = tmp_path / "anime.pt"
    safeio.write_pickle(
        path,
        {
            768: (mlp(768), mlp(768)),
            320: (mlp(320), mlp(320)),
            "layer_structure": [1, 2, 1],
            "activation_func": "relu",
            "is_layer_norm": False,
            "use_dropout": True,
            "name": "anime",
            "step": 2000,
        },
    )

    report = _inspect_json(path)

    assert (report["kind"], report["base"], report["format"]) == ("hypernetwork", "sd1", "pickle")
    assert report["tensors"] == 16
    summary = report["summary"]
    assert summary["widths"] == [320, 768]
    assert summary["layer_structure"] == [1.0, 2.0, 1.0]
    assert (summary["activation"], summary["layer_norm"], summary["dropout"]) == (
        "relu",
        False,
        True,
    )
    assert "relu" in _inspect(str(path)).stdout


# ---------------------------------------------------------------------------------------------
# refusals: a message naming the file and the reason, exit code 2, no traceback


def _assert_refused(result: Result, path: Path, reason: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {path}")
    assert reason in result.stderr
    assert "Traceback" not in result.output


def test_git_lfs_pointer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 2132\n")
    _assert_refused(_inspect(str(path), "--json"), path, "Git-LFS pointer")


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, buffer)
    path = tmp_path / "model.ckpt"
    path.write_bytes(buffer.getvalue())

    result = _inspect(str(path))

    _assert_refused(result, path, "tries to import")
    assert "system" in result.stderr
    assert not marker.exists()


def test_file_that_is_no_model_lists_why(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.safetensors"
    safeio.write_safetensors(path, {"state.0.exp_avg": torch.zeros(3)})
    result = _inspect(str(path))
    _assert_refused(result, path, "not a model file brushwork recognises")
    assert "not a lora: no LoRA keys" in result.stderr


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    _assert_refused(_inspect(str(path)), path, "no such file")
