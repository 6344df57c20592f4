"""Safe reading: malicious pickles refused unrun, every malformed file named, writes atomic."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from brushwork.core.errors import CorruptModelError, NotAModelError, UnsafeModelError
from brushwork.core.fsutil import atomic_writer
from brushwork.core.kinds import FileFormat
from brushwork.formats import safe_pickle, safeio

# ---------------------------------------------------------------------------------------------
# helpers


class _TouchFile:
    """Unpickling this would run a shell command that creates `target`."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


class _OpenFile:
    """Unpickling this would create `target` through `open(target, "w")`."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.target), "w"))


def _torch_zip_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _safetensors_bytes(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _f32_entry(begin: int, count: int) -> dict[str, Any]:
    return {"dtype": "F32", "shape": [count], "data_offsets": [begin, begin + 4 * count]}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# malicious pickles: refused, named, never run


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_pickle_running_a_shell_command_is_refused_without_running(
    tmp_path: Path, container: str
) -> None:
    marker = tmp_path / "pwned"
    payload = {"state_dict": {"w": torch.zeros(2)}, "hook": _TouchFile(marker)}
    data = (
        _torch_zip_bytes(payload) if container == "torch-zip" else pickle.dumps(payload, protocol=2)
    )
    path = _write(tmp_path, "evil.ckpt", data)

    with pytest.raises(UnsafeModelError) as caught:
        safeio.read_model_file(path)

    assert not marker.exists()
    assert str(path) in str(caught.value)
    assert "system" in caught.value.reason  # os.system is pickled as posix.system / nt.system
    assert any(name.endswith(".system") for name in caught.value.imports)
    assert "nothing in it ran" in str(caught.value)


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_pickle_opening_a_file_is_refused_and_names_open(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "created-by-open"
    payload = {"w": torch.zeros(2), "hook": _OpenFile(marker)}
    data = (
        _torch_zip_bytes(payload) if container == "torch-zip" else pickle.dumps(payload, protocol=4)
    )
    path = _write(tmp_path, "evil.pt", data)

    with pytest.raises(UnsafeModelError, match=r"tries to import (io|builtins)\.open"):
        safeio.read_pickle(path)
    assert not marker.exists()


def test_pickle_importing_a_torch_function_outside_the_allowlist_is_refused(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, "evil.pt", _torch_zip_bytes({"loader": torch.hub.load}))
    with pytest.raises(UnsafeModelError, match=r"torch\.hub\.load"):
        safeio.read_pickle(path)


def test_pickle_scan_lists_imports_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    imports = safe_pickle.pickle_imports(pickle.dumps(_TouchFile(marker), protocol=2))
    assert any(name.endswith(".system") for name in imports)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# real checkpoints load


def test_state_dict_checkpoint_loads_and_is_unwrapped(tmp_path: Path) -> None:
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    path = tmp_path / "model.ckpt"
    safeio.write_pickle(path, {"state_dict": {"model.w": weight}, "global_step": 470000})

    model = safeio.read_model_file(path)

    assert model.format is FileFormat.PICKLE
    assert list(model.tensors) == ["model.w"]
    assert torch.equal(model.tensors["model.w"], weight)
    assert model.raw["global_step"] == 470000


def test_checkpoint_referencing_lightning_model_checkpoint_loads_without_lightning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Old SD 1.x .ckpt files key their callback state by pytorch_lightning's ModelCheckpoint
    # class. Build such a pickle with a stand-in module, then remove it again before loading.
    module_name = "pytorch_lightning.callbacks.model_checkpoint"
    fake_module = types.ModuleType(module_name)
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": module_name})
    fake_module.ModelCheckpoint = model_checkpoint  # type: ignore[attr-defined]
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module_name):
        monkeypatch.setitem(sys.modules, name, fake_module)
    payload = {
        "state_dict": {"model.w": torch.ones(3)},
        "callbacks": {model_checkpoint: {"best_model_score": None, "monitor": None}},
    }
    data = _torch_zip_bytes(payload)
    monkeypatch.undo()
    assert "pytorch_lightning" not in sys.modules
    assert b"pytorch_lightning" in data
    path = _write(tmp_path, "sd-v1-4.ckpt", data)

    model = safeio.read_model_file(path)

    assert torch.equal(model.tensors["model.w"], torch.ones(3))
    assert "pytorch_lightning" not in sys.modules


# ---------------------------------------------------------------------------------------------
# files that are not models


def test_git_lfs_pointer_is_named_with_a_fix(tmp_path: Path) -> None:
    pointer = (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa\n"
        b"size 4265146304\n"
    )
    path = _write(tmp_path, "v1-5.safetensors", pointer)
    with pytest.raises(NotAModelError, match="Git-LFS pointer") as caught:
        safeio.read_model_file(path)
    assert "git lfs pull" in str(caught.value)
    assert str(path) in str(caught.value)


def test_html_page_saved_as_a_model_is_named(tmp_path: Path) -> None:
    page = b"\n  <!DOCTYPE html><html><head><title>Sign in</title></head></html>"
    path = _write(tmp_path, "lora.safetensors", page)
    with pytest.raises(NotAModelError, match="HTML page"):
        safeio.read_model_file(path)


def test_empty_file_says_download_did_not_finish(tmp_path: Path) -> None:
    path = _write(tmp_path, "model.ckpt", b"")
    with pytest.raises(CorruptModelError, match=r"is empty \(0 bytes\)") as caught:
        safeio.read_model_file(path)
    assert "fetch it again" in str(caught.value)


def test_garbage_bytes_are_not_a_model(tmp_path: Path) -> None:
    garbage = bytes(range(0xF0, 0x100)) * 40
    path = _write(tmp_path, "model.safetensors", garbage)
    with pytest.raises(CorruptModelError, match="not a safetensors file or a PyTorch pickle"):
        safeio.read_model_file(path)


def test_missing_file_and_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(NotAModelError, match="no such file"):
        safeio.read_model_file(tmp_path / "absent.safetensors")
    with pytest.raises(NotAModelError, match="is a folder"):
        safeio.read_model_file(tmp_path)


def test_damaged_pickle_is_corrupt_not_unsafe(tmp_path: Path) -> None:
    path = _write(tmp_path, "model.ckpt", b"\x80\x02garbage that is no pickle")
    with pytest.raises(CorruptModelError, match="damaged") as caught:
        safeio.read_pickle(path)
    assert not isinstance(caught.value, UnsafeModelError)


# ---------------------------------------------------------------------------------------------
# malformed safetensors


def test_truncated_header_is_named(tmp_path: Path) -> None:
    full = _safetensors_bytes({"w": _f32_entry(0, 4)}, b"\x00" * 16)
    path = _write(tmp_path, "model.safetensors", full[:20])
    with pytest.raises(CorruptModelError, match="is truncated: its header needs"):
        safeio.read_header(path)


def test_truncated_tensor_data_is_named(tmp_path: Path) -> None:
    full = _safetensors_bytes({"w": _f32_entry(0, 4)}, b"\x00" * 16)
    path = _write(tmp_path, "model.safetensors", full[:-3])
    with pytest.raises(CorruptModelError, match="is truncated: the tensors need") as caught:
        safeio.read_safetensors(path)
    assert "fetch it again" in str(caught.value)


def test_absurd_header_length_is_refused_before_reading(tmp_path: Path) -> None:
    path = _write(tmp_path, "model.safetensors", struct.pack("<Q", 10**12) + b'{"w": {}}')
    with pytest.raises(CorruptModelError, match="over the 100,000,000-byte limit"):
        safeio.read_header(path)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        pytest.param(b'{"w\xff": {}}', b"", "not valid UTF-8", id="non-utf8"),
        pytest.param(
            b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
            b' "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
            b"\x00" * 4,
            "duplicate key 'w'",
            id="duplicate-keys",
        ),
        pytest.param(
            {"w": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}},
            b"\x00" * 4,
            "unknown dtype 'Q99'",
            id="bad-dtype",
        ),
        pytest.param(
            {"a": _f32_entry(0, 4), "b": _f32_entry(0, 4)},
            b"\x00" * 16,
            "invalid offset (overlap or gap)",
            id="overlapping-offsets",
        ),
        pytest.param(
            {"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}},
            b"\x00" * 16,
            "does not match its shape and dtype",
            id="shape-dtype-mismatch",
        ),
        pytest.param(
            {"w": _f32_entry(0, 4)}, b"\x00" * 17, "1 unexpected bytes after", id="trailing-bytes"
        ),
        pytest.param(b"[1, 2]", b"", "not a JSON object", id="json-array"),
        pytest.param(b'{"w": ', b"", "malformed safetensors header", id="broken-json"),
        pytest.param(
            {"__metadata__": {"n": 1}},
            b"",
            "__metadata__ entry that is not a string-to-string map",
            id="metadata-not-strings",
        ),
    ],
)
def test_header_errors_name_the_problem(
    tmp_path: Path, header: dict[str, Any] | bytes, data: bytes, message: str
) -> None:
    path = _write(tmp_path, "model.safetensors", _safetensors_bytes(header, data))
    with pytest.raises(CorruptModelError) as caught:
        safeio.read_safetensors(path)
    assert message in caught.value.reason
    assert caught.value.path == path


def test_header_is_read_without_tensor_data(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    safeio.write_safetensors(
        path,
        {"a": torch.zeros(2, 3, dtype=torch.float16), "b.alpha": torch.tensor(8.0)},
        {"ss_network_dim": "4"},
    )
    header = safeio.read_header(path)
    assert header.tensors["a"].shape == (2, 3)
    assert header.tensors["a"].dtype == "F16"
    assert header.tensors["b.alpha"].shape == ()
    assert header.metadata == {"ss_network_dim": "4"}
    assert header.file_size == path.stat().st_size
    assert safeio.read_selected_tensors(path, ["b.alpha"], header) == {"b.alpha": 8.0}


def test_pickle_is_not_read_as_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    safeio.write_pickle(path, {"w": torch.zeros(1)})
    with pytest.raises(CorruptModelError, match="is a PyTorch pickle, not a safetensors file"):
        safeio.read_safetensors(path)


# ---------------------------------------------------------------------------------------------
# malformed torch zip archives


def _zip_bytes(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _torch_zip_entries(obj: Any) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(_torch_zip_bytes(obj))) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_zip_with_compressed_entry_is_refused(tmp_path: Path) -> None:
    entries = _torch_zip_entries({"w": torch.zeros(64)})
    path = _write(tmp_path, "model.ckpt", _zip_bytes(entries, zipfile.ZIP_DEFLATED))
    with pytest.raises(UnsafeModelError, match="compressed entry"):
        safeio.read_pickle(path)


def test_zip_with_unexpected_entry_is_refused(tmp_path: Path) -> None:
    entries = _torch_zip_entries({"w": torch.zeros(2)})
    entries["archive/run_me.py"] = b"import os\n"
    path = _write(tmp_path, "model.ckpt", _zip_bytes(entries))
    with pytest.raises(UnsafeModelError, match=r"unexpected archive entry 'archive/run_me\.py'"):
        safeio.read_pickle(path)


def test_zip_without_data_pkl_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = _write(tmp_path, "model.ckpt", _zip_bytes({"readme.txt": b"hello"}))
    with pytest.raises(CorruptModelError, match=r"no data\.pkl"):
        safeio.read_pickle(path)


def test_damaged_zip_is_named(tmp_path: Path) -> None:
    data = _torch_zip_bytes({"w": torch.zeros(256)})
    path = _write(tmp_path, "model.ckpt", data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match="damaged or truncated zip"):
        safeio.read_pickle(path)


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    safeio.write_safetensors(path, {"w": torch.ones(4)})
    before = path.read_bytes()

    with pytest.raises(RuntimeError, match="disk vanished"), atomic_writer(path) as handle:
        handle.write(b"half of a new file")
        raise RuntimeError("disk vanished")

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors"]


def test_write_failing_at_flush_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lora.safetensors"
    safeio.write_safetensors(path, {"w": torch.ones(4)})
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("brushwork.core.fsutil.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        safeio.write_safetensors(path, {"w": torch.zeros(1000)})

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors"]


def test_written_safetensors_round_trip_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "out.safetensors"
    shared = torch.randn(4, 4)
    safeio.write_safetensors(path, {"a": shared, "b": shared[:2]}, {"k": "v"})
    model = safeio.read_model_file(path)
    assert torch.equal(model.tensors["a"], shared)
    assert torch.equal(model.tensors["b"], shared[:2])
    assert model.metadata == {"k": "v"}
