"""Converting pickles to safetensors: safely, atomically, never over an existing file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from brushwork.core.errors import ConfigError, UnsafeModelError, UnsupportedModelError
from brushwork.core.kinds import ModelKind
from brushwork.formats import detect
from brushwork.formats.embedding import read_embedding
from brushwork.formats.safeio import read_safetensors, write_pickle, write_safetensors
from brushwork.library.convert import convert_to_safetensors

from .conftest import (
    a1111_embedding,
    checkpoint_tensors,
    lora_tensors,
    write_checkpoint,
    write_hypernetwork,
)


def test_a_checkpoint_converts_tensor_for_tensor(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "model.ckpt", ema=True)
    result = convert_to_safetensors(source)
    assert result.target == tmp_path / "model.safetensors"
    assert result.kind is ModelKind.CHECKPOINT
    written = read_safetensors(result.target).tensors
    expected = checkpoint_tensors(ema=True)
    assert set(written) == set(expected)  # state_dict unwrapped; global_step left behind
    original = torch.load(source, weights_only=True)["state_dict"]
    for key, tensor in original.items():
        assert torch.equal(written[key], tensor), key
    assert detect.detect_file(result.target).kind is ModelKind.CHECKPOINT


def test_prune_drops_ema_and_half_casts_to_fp16(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "model.ckpt", ema=True)
    result = convert_to_safetensors(source, prune=True, half=True)
    written = read_safetensors(result.target).tensors
    assert not any(key.startswith("model_ema.") for key in written)
    assert sorted(result.dropped) == sorted(k for k in checkpoint_tensors(ema=True) if "ema" in k)
    assert {t.dtype for t in written.values()} == {torch.float16}
    assert result.halved == len(written)


def test_half_keeps_tensors_fp16_cannot_hold(tmp_path: Path) -> None:
    tensors: dict[str, Any] = dict(lora_tensors())
    big_alpha = next(k for k in tensors if k.endswith(".alpha"))
    tensors[big_alpha] = torch.tensor(1e6)
    write_pickle(tmp_path / "lora.pt", tensors)
    result = convert_to_safetensors(tmp_path / "lora.pt", half=True)
    written = read_safetensors(result.target).tensors
    assert result.kept_precision == (big_alpha,)
    assert written[big_alpha].dtype == torch.float32 and float(written[big_alpha]) == 1e6
    assert result.kind is ModelKind.LORA


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists"):
        convert_to_safetensors(source)
    assert (tmp_path / "model.safetensors").read_bytes() == b"precious"
    convert_to_safetensors(source, overwrite=True)
    assert detect.detect_file(tmp_path / "model.safetensors").kind is ModelKind.CHECKPOINT


def test_an_a1111_embedding_becomes_emb_params(tmp_path: Path) -> None:
    data = a1111_embedding()
    write_pickle(tmp_path / "bad-hands.pt", data)
    result = convert_to_safetensors(tmp_path / "bad-hands.pt")
    written = read_safetensors(result.target).tensors
    assert list(written) == ["emb_params"]
    assert torch.equal(written["emb_params"], data["string_to_param"]["*"])
    assert read_embedding(result.target).num_vectors == 2
    assert result.kind is ModelKind.EMBEDDING


def test_hypernetworks_are_refused(tmp_path: Path) -> None:
    source = write_hypernetwork(tmp_path / "hn.pt")
    with pytest.raises(UnsupportedModelError, match=r"only as \.pt"):
        convert_to_safetensors(source)
    assert not (tmp_path / "hn.safetensors").exists()


class _TouchFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": _TouchFile(marker)}}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeModelError):
        convert_to_safetensors(tmp_path / "evil.ckpt")
    assert not marker.exists()
    assert not (tmp_path / "evil.safetensors").exists()


def test_a_safetensors_file_is_rewritten_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    write_safetensors(path, lora_tensors(), {"ss_output_name": "kept"})
    with pytest.raises(ConfigError, match="already a safetensors file"):
        convert_to_safetensors(path)
    with pytest.raises(ConfigError, match="already exists"):
        convert_to_safetensors(path, half=True)
    convert_to_safetensors(path, half=True, overwrite=True)
    rewritten = read_safetensors(path)
    assert rewritten.metadata["ss_output_name"] == "kept"
    assert {t.dtype for t in rewritten.tensors.values()} == {torch.float16}
