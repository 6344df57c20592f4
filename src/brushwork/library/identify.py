"""A model file's identity: what `formats.detect` says it is, plus the facts of its contents.

The file is read once: a safetensors header (no tensor data), or a pickle through the guarded
loader. A file that is not a model, or cannot be read, gets an identity with `kind=None` and the
reason; nothing is raised for it, so a library listing always finishes. Identities are cached in
the library index as JSON; `IDENTITY_VERSION` changes whenever what is recorded changes, so old
verdicts are not trusted after an upgrade.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from brushwork.core import hashing
from brushwork.core.errors import ModelFileError
from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.formats import safeio
from brushwork.formats.detect import detect_view
from brushwork.formats.tensor_view import read_tensor_view
from brushwork.library.facts import TensorFacts, TrainingFacts, tensor_facts, training_facts

logger = logging.getLogger(__name__)

IDENTITY_VERSION = 1


@dataclass(frozen=True)
class Identity:
    """What a file's contents say it is. `kind` is None for a file that is not a usable model."""

    kind: ModelKind | None
    base: BaseFamily | None
    format: FileFormat | None
    layout: str | None = None  # key convention, from formats.detect (ldm, kohya, a1111...)
    reasons: tuple[str, ...] = ()
    error: str | None = None  # why the file is not a usable model
    error_type: str | None = None  # NotAModelError, CorruptModelError, UnsafeModelError, ...
    legacy_hash: str | None = None  # A1111's old 8-hex model hash (cheap: 64 KiB)
    tensors: TensorFacts | None = None
    training: TrainingFacts | None = None
    cacheable: bool = True  # False after an unexpected failure, so a fixed brushwork retries

    @property
    def is_valid(self) -> bool:
        return self.kind is not None


def _identify_contents(path: Path) -> Identity:
    """Raises ModelFileError (and possibly other errors from damaged files)."""
    view = read_tensor_view(path)
    detection = detect_view(view, path)
    return Identity(
        kind=detection.kind,
        base=detection.base,
        format=detection.format,
        layout=detection.layout,
        reasons=detection.reasons,
        tensors=tensor_facts(view),
        training=training_facts(view.metadata) if view.metadata else None,
    )


def _legacy_hash(path: Path) -> str | None:
    try:
        return hashing.legacy_model_hash(path)
    except OSError:
        return None


def _format_of(path: Path) -> FileFormat | None:
    try:
        return safeio.sniff_format(path)
    except ModelFileError:
        return None


def _unusable(path: Path, exc: Exception, error: str, *, cacheable: bool = True) -> Identity:
    return Identity(
        kind=None,
        base=None,
        format=_format_of(path),
        error=error,
        error_type=type(exc).__name__,
        cacheable=cacheable,
    )


def identify_file(path: Path) -> Identity:
    """Identify one file; never raises for a bad file (see the module docstring)."""
    try:
        identity = _identify_contents(path)
    except ModelFileError as exc:
        hint = f"; {exc.hint}" if exc.hint else ""
        identity = _unusable(path, exc, f"{exc.reason}{hint}")
    except Exception as exc:
        logger.warning("could not identify %s", path, exc_info=True)
        error = f"could not be identified: {type(exc).__name__}: {exc}"
        identity = _unusable(path, exc, error, cacheable=False)
    return replace(identity, legacy_hash=_legacy_hash(path))


# ---------------------------------------------------------------------------------------------
# (de)serialisation for the index


def identity_to_json(identity: Identity) -> str:
    return json.dumps(asdict(identity), sort_keys=True)


def identity_from_json(text: str) -> Identity:
    """Rebuild an Identity from `identity_to_json`; raises ValueError/KeyError/TypeError if the
    text is not one."""
    data = json.loads(text)
    tensors = data.get("tensors")
    training = data.get("training")
    if training is not None:
        training["top_tags"] = tuple((str(tag), int(count)) for tag, count in training["top_tags"])
    return Identity(
        kind=ModelKind(data["kind"]) if data["kind"] is not None else None,
        base=BaseFamily(data["base"]) if data["base"] is not None else None,
        format=FileFormat(data["format"]) if data["format"] is not None else None,
        layout=data["layout"],
        reasons=tuple(data["reasons"]),
        error=data["error"],
        error_type=data["error_type"],
        legacy_hash=data["legacy_hash"],
        tensors=TensorFacts(**tensors) if tensors is not None else None,
        training=TrainingFacts(**training) if training is not None else None,
    )
