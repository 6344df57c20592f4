"""The streamed safetensors writer: files any safetensors reader opens, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brushwork.core.errors import ConfigError
from brushwork.formats.safeio import read_header
from brushwork.modeltools.streamwrite import TensorSpec, write_safetensors_streamed

TENSORS = {
    "b.weight": torch.randn(3, 5),
    "a.half": torch.randn(7).half(),
    "c.bf16": torch.randn(2, 2, 3).bfloat16(),
    "d.ids": torch.arange(77).reshape(1, 77),
    "e.scalar": torch.tensor(4.0),
    "f.flag": torch.tensor([True, False, True]),
    "g.empty": torch.zeros(0, 4),
}


def _specs() -> list[TensorSpec]:
    return [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in TENSORS.items()]


def test_a_streamed_file_reads_back_with_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    write_safetensors_streamed(path, _specs(), iter(TENSORS.items()), {"format": "pt"})
    loaded = load_file(path)
    assert loaded.keys() == TENSORS.keys()
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in TENSORS.items())
    header = read_header(path)
    assert header.metadata == {"format": "pt"} and header.data_start % 8 == 0


def test_tensors_are_cast_to_the_announced_dtype(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    specs = [TensorSpec("w", torch.float16, (2, 2))]
    write_safetensors_streamed(path, specs, iter([("w", torch.ones(2, 2))]))
    assert load_file(path)["w"].dtype == torch.float16


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([("w", torch.ones(2, 3))], "has shape"),
        ([("v", torch.ones(2, 2))], "came where"),
        ([], "never came"),
        ([("w", torch.ones(2, 2)), ("x", torch.ones(1))], "more tensors"),
    ],
)
def test_a_stream_that_breaks_its_announcement_leaves_no_file(
    tmp_path: Path, tensors: list[tuple[str, torch.Tensor]], message: str
) -> None:
    specs = [TensorSpec("w", torch.float32, (2, 2))]
    with pytest.raises(ConfigError, match=message):
        write_safetensors_streamed(tmp_path / "s.safetensors", specs, iter(tensors))
    assert list(tmp_path.iterdir()) == []
