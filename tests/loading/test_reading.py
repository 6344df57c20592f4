"""Reading for loading: fresh cast tensors from safetensors, the architecture settled first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.core.errors import CorruptModelError, WrongKindError
from brushwork.formats.safeio import read_header, read_tensors_cast, write_safetensors
from brushwork.loading.reading import open_checkpoint, read_components
from brushwork.testing.factory import Components, write_checkpoint_file, write_vae_file


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.safetensors"
    write_safetensors(
        path,
        {
            "half": torch.arange(12, dtype=torch.float16).reshape(3, 4) / 3,
            "full": torch.linspace(-1, 1, 5),
            "ids": torch.arange(7, dtype=torch.int64),
            "empty": torch.zeros(0, 3),
        },
    )
    return path


def test_floats_are_cast_and_integers_kept(mixed: Path) -> None:
    out = read_tensors_cast(mixed, dict.fromkeys(["half", "full", "ids", "empty"], torch.bfloat16))
    assert out["half"].dtype == out["full"].dtype == out["empty"].dtype == torch.bfloat16
    assert torch.equal(
        out["half"], (torch.arange(12, dtype=torch.float16).reshape(3, 4) / 3).bfloat16()
    )
    assert torch.equal(out["full"], torch.linspace(-1, 1, 5).bfloat16())
    assert out["ids"].dtype == torch.int64 and out["ids"].tolist() == list(range(7))
    assert out["empty"].shape == (0, 3)


def test_each_tensor_owns_aligned_storage(mixed: Path) -> None:
    out = read_tensors_cast(mixed, {"half": None, "full": torch.float32, "ids": None})
    assert out["half"].dtype == torch.float16  # None: as stored
    pointers = set()
    for name, tensor in out.items():
        storage = tensor.untyped_storage()
        assert storage.nbytes() == tensor.numel() * tensor.element_size(), name
        assert tensor.storage_offset() == 0 and tensor.data_ptr() % 64 == 0, name
        pointers.add(storage.data_ptr())
    assert len(pointers) == 3


def test_only_the_named_tensors_are_read(mixed: Path) -> None:
    assert list(read_tensors_cast(mixed, {"ids": None})) == ["ids"]


def test_a_truncated_file_is_refused(mixed: Path, tmp_path: Path) -> None:
    header = read_header(mixed)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(mixed.read_bytes()[:-8])
    with pytest.raises(CorruptModelError, match="truncated"):
        read_tensors_cast(cut, {"half": None, "full": None, "ids": None}, header)


def test_components_come_in_the_asked_dtypes(
    tiny: dict[str, Components], tiny_files: dict[str, Path]
) -> None:
    opened = open_checkpoint(tiny_files["sdxl"])
    checkpoint = read_components(opened, dtype=torch.float16, vae_dtype=torch.float32)
    assert {t.dtype for t in checkpoint.unet.values()} == {torch.float16}
    assert {t.dtype for t in checkpoint.vae.values()} == {torch.float32}
    for state_dict in checkpoint.text_encoders.values():
        assert {t.dtype for t in state_dict.values()} == {torch.float16}
    want = tiny["sdxl"].vae.state_dict()
    assert all(torch.equal(t, want[k]) for k, t in checkpoint.vae.items())
    assert checkpoint.extra == {} and checkpoint.ema_unet is None


def test_a_pickle_is_opened_through_the_guarded_reader(
    tiny: dict[str, Components], tmp_path: Path
) -> None:
    path = write_checkpoint_file(tiny["sd2"], tmp_path / "model.ckpt")
    opened = open_checkpoint(path)
    assert opened.architecture.family.value == "sd2" and opened.tensors is not None
    checkpoint = read_components(opened)
    assert opened.tensors is None  # handed over, not kept twice
    assert sorted(checkpoint.unet) == sorted(tiny["sd2"].unet.state_dict())


def test_the_prediction_type_argument_beats_the_sidecar(
    tiny: dict[str, Components], tmp_path: Path
) -> None:
    path = write_checkpoint_file(
        tiny["sd2"], tmp_path / "v.safetensors", prediction_type="v_prediction"
    )
    assert open_checkpoint(path).architecture.prediction_type == "v_prediction"
    assert (
        open_checkpoint(path, prediction_type="epsilon").architecture.prediction_type == "epsilon"
    )


def test_a_vae_file_is_not_a_checkpoint(tiny: dict[str, Components], tmp_path: Path) -> None:
    path = write_vae_file(tiny["sd1"], tmp_path / "some.vae.safetensors")
    with pytest.raises(WrongKindError, match="is a vae, not a checkpoint"):
        open_checkpoint(path)
