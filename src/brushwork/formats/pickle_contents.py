"""Unpickled model files as flat tensors: nested dicts, tuples and ParameterDicts to dotted names.

A1111 embeddings (`{"string_to_param": {"*": tensor}}`), hypernetworks
(`{768: (k_state_dict, v_state_dict), "layer_structure": ...}`) and `{"state_dict": ...}`
checkpoints all nest their tensors; detection and summaries look at one flat name -> tensor map.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import NotAModelError
from brushwork.formats.safeio import read_pickle

_MAX_DEPTH = 6


@dataclass(frozen=True)
class PickleContents:
    """An unpickled model as flat tensors (dotted paths) plus its top-level non-tensor fields."""

    tensors: dict[str, torch.Tensor]
    fields: dict[str, Any]


def pickle_contents(obj: Any) -> PickleContents:
    """Flatten nested dicts/tuples/ParameterDicts to dotted names, unwrapping `state_dict`."""
    top = obj if isinstance(obj, Mapping) else {}
    if isinstance(top.get("state_dict"), Mapping):
        obj = top["state_dict"]
    tensors: dict[str, torch.Tensor] = {}
    _flatten(obj, "", tensors, 0)
    fields = {str(k): v for k, v in top.items() if not _holds_tensors(v)}
    return PickleContents(tensors, fields)


def read_pickle_contents(path: Path | str) -> PickleContents:
    """Unpickle a model file safely (`safeio.read_pickle`) and flatten it."""
    path = Path(path)
    obj = read_pickle(path)
    if not isinstance(obj, Mapping):
        raise NotAModelError(path, f"holds a {type(obj).__name__}, not a dictionary of tensors")
    return pickle_contents(obj)


def _children(obj: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(obj, torch.nn.ParameterDict):
        return ((str(k), v) for k, v in obj.items())
    if isinstance(obj, Mapping):
        return ((str(k), v) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return ((str(i), v) for i, v in enumerate(obj))
    return ()


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
        return
    if depth >= _MAX_DEPTH:
        return
    for name, child in _children(obj):
        _flatten(child, f"{prefix}{name}.", out, depth + 1)


def _holds_tensors(obj: Any) -> bool:
    found: dict[str, torch.Tensor] = {}
    _flatten(obj, "x.", found, 0)
    return bool(found)
