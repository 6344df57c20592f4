"""The guarded unpickler behind `safeio.read_pickle`: `torch.load(weights_only=True)` behind a zip
structure check, with a small allowlist for what real SD files carry (pytorch_lightning's
ModelCheckpoint stand-in, numpy scalars). A pickle that wants to import anything else is
refused, and the error names what it tried to import. Nothing runs.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brushwork.core.errors import CorruptModelError, UnsafeModelError

logger = logging.getLogger(__name__)

_TORCH_ZIP_ENTRY = re.compile(
    r"^[^/]+/(data\.pkl|data/\d+|version|byteorder|\.data/serialization_id|\.data/version"
    r"|\.format_version|\.storage_alignment)$"
)


class _LightningModelCheckpoint:
    """Stands in for pytorch_lightning's ModelCheckpoint, which old SD 1.x .ckpt files reference.

    It is never imported from pytorch_lightning; unpickling only fills this empty object.
    """


_SAFE_EXTRA_GLOBALS: list[Any] = [
    (_LightningModelCheckpoint, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    torch.nn.modules.container.ParameterDict,
    torch.nn.parameter.Parameter,
]


def _extra_numpy_globals() -> list[Any]:
    extras: list[Any] = [np.dtype, np.ndarray]
    scalar = getattr(getattr(np, "_core", np).multiarray, "scalar", None)
    if scalar is not None:
        extras += [(scalar, "numpy.core.multiarray.scalar"), scalar]
    extras += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
    return extras


def pickle_imports(data: bytes) -> list[str]:
    """Every `module.name` a pickle stream would import (read with pickletools; nothing runs)."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name in {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}:
                strings.append(str(arg))
            elif opcode.name in {"GLOBAL", "INST"}:
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except (ValueError, EOFError, IndexError, UnicodeDecodeError) as exc:  # malformed stream
        logger.debug("pickle scan stopped early: %s", exc)
    return list(dict.fromkeys(found))


def _check_zip(path: Path, data: bytes) -> bytes:
    """Validate a torch zip archive's structure; return its data.pkl bytes."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise CorruptModelError(
            path, f"is a damaged or truncated zip/PyTorch archive: {exc}"
        ) from None
    with archive:
        infos = archive.infolist()
        pickles = [i for i in infos if i.filename.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CorruptModelError(
                path, "is a zip archive but not a PyTorch checkpoint (no data.pkl)"
            )
        for info in infos:
            if not _TORCH_ZIP_ENTRY.match(info.filename):
                raise UnsafeModelError(
                    path, f"holds an unexpected archive entry {info.filename!r}; refused"
                )
            if info.compress_type != zipfile.ZIP_STORED:
                raise UnsafeModelError(
                    path,
                    f"holds a compressed entry {info.filename!r} (PyTorch never compresses; "
                    "a compressed entry can expand to fill memory); refused",
                )
        if sum(i.file_size for i in infos) > len(data):
            raise CorruptModelError(path, "declares more data than the file holds (truncated?)")
        try:
            return archive.read(pickles[0])
        except (zipfile.BadZipFile, EOFError) as exc:
            raise CorruptModelError(path, f"is damaged: {exc}") from None


def load_pickle_bytes(data: bytes, path: Path | None = None) -> Any:
    is_zip = data.startswith(b"PK\x03\x04")
    stream = _check_zip(path or Path("<bytes>"), data) if is_zip else data
    imports = pickle_imports(stream)
    try:
        with (
            torch.serialization.safe_globals(_SAFE_EXTRA_GLOBALS + _extra_numpy_globals()),
            warnings.catch_warnings(),
        ):
            # hand-made pickles use newer protocols; whether they load is decided below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle_errors() as exc:
        reason = _weights_only_reason(str(exc))
        refused = _REFUSED_GLOBAL.findall(reason)
        unsafe = list(dict.fromkeys(refused + _risky_imports(imports)))
        if unsafe or _REFUSED_OBJECT.search(reason):
            named = ", ".join(unsafe) if unsafe else "objects other than tensors"
            raise UnsafeModelError(
                path, f"is a pickle that tries to import {named}", imports=tuple(unsafe)
            ) from None
        raise CorruptModelError(path, f"is a damaged PyTorch pickle: {reason}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CorruptModelError(
            path, f"is a damaged or truncated PyTorch pickle: {_first_line(str(exc))}"
        ) from None


# torch's weights-only unpickler names a refused import as "GLOBAL module.name"
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+?)(?= whose| was|\s|$)")
_REFUSED_OBJECT = re.compile(r"Can only (create new object|build)")
_TORCH_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation")


def _weights_only_reason(message: str) -> str:
    """The part of torch's weights-only error that says what went wrong (not the advice)."""
    if "WeightsUnpickler error:" in message:
        after = message.split("WeightsUnpickler error:", 1)[1].strip()
        return _first_line(after)
    for line in message.strip().splitlines():
        text = line.strip()
        if text and not text.lower().startswith(_TORCH_BOILERPLATE):
            return text
    return _first_line(message)


def pickle_errors() -> tuple[type[BaseException], ...]:
    return (pickle.UnpicklingError, AttributeError, TypeError)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


_BENIGN_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.", "builtins.set")


def _risky_imports(imports: list[str]) -> list[str]:
    """The imports of a pickle stream outside what tensor files use (informational)."""
    allowed = {"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"}
    return [n for n in imports if not n.startswith(_BENIGN_PREFIXES) and n not in allowed]
