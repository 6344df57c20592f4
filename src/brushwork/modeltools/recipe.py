"""How a tool's output records what made it: file metadata and a `<stem>.json` sidecar.

Checkpoint merges write A1111's keys (a1111.md 7.1), so A1111 and brushwork both show the
history: ``sd_merge_recipe`` (a JSON string: the method, the multiplier, the inputs' sha256, ...)
and ``sd_merge_models`` (``{sha256: {name, legacy_hash, sd_merge_recipe}}``, gathered
recursively from the inputs' own metadata). LoRA tools write kohya's ``ss_*`` keys plus a
``brushwork_recipe`` JSON string.

Every output also gets a ``<stem>.json`` sidecar in A1111's user-metadata shape
(``description``, ``notes``, ``sd version``) with a ``recipe`` object: the same facts, readable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brushwork.core.fsutil import atomic_write_bytes
from brushwork.core.kinds import BaseFamily

logger = logging.getLogger(__name__)

RECIPE_KEY = "brushwork_recipe"
MERGE_RECIPE_KEY = "sd_merge_recipe"
MERGE_MODELS_KEY = "sd_merge_models"
SD_VERSIONS = {BaseFamily.SD1: "SD1", BaseFamily.SD2: "SD2", BaseFamily.SDXL: "SDXL"}


def parse_json_field(metadata: Mapping[str, str], key: str) -> Any:
    """A metadata value that holds JSON, or None when absent or malformed."""
    raw = metadata.get(key)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        logger.warning("ignoring malformed %s metadata", key)
        return None


def merge_models_entry(
    identity: Mapping[str, Any], metadata: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """One input's part of ``sd_merge_models``: itself and the models it was merged from."""
    models: dict[str, dict[str, Any]] = {}
    earlier = parse_json_field(metadata, MERGE_MODELS_KEY)
    if isinstance(earlier, dict):
        models.update({str(k): v for k, v in earlier.items() if isinstance(v, dict)})
    sha256 = identity.get("sha256")
    if sha256:
        models[str(sha256)] = {
            "name": identity.get("name"),
            "legacy_hash": identity.get("legacy_hash"),
            "sd_merge_recipe": parse_json_field(metadata, MERGE_RECIPE_KEY),
        }
    return models


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name.rsplit(".", 1)[0] + ".json")


def write_sidecar(
    model_path: Path,
    *,
    description: str,
    recipe: Mapping[str, Any],
    family: BaseFamily | None,
    notes: str = "",
) -> Path:
    """Write `<stem>.json` beside the model (atomically, replacing an older one)."""
    document: dict[str, Any] = {"description": description, "notes": notes}
    if family is not None:
        document["sd version"] = SD_VERSIONS[family]
    document["recipe"] = dict(recipe)
    path = sidecar_path(model_path)
    data = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, data.encode("utf-8"), overwrite=True)
    return path
