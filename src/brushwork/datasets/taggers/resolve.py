"""Finding a tagger by name or folder.

- `shapes`: the built-in tagger of the demo's shapes world (`taggers.shapes`).
- A folder (or a file in it): what it holds decides the kind:
  `*.onnx` + `selected_tags.csv` -> WD14; `*.onnx` + `tags.txt` -> DeepDanbooru (ONNX export);
  `config.json` of model type `blip` -> BLIP captioner. `model.onnx` is preferred when a folder
  holds several `.onnx` files.
- Any other name: the folder `taggers/<name>/` in a library root's models folder
  (`<root>/models/taggers/<name>/`, or `<root>/taggers/<name>/` for a bare models folder).
Nothing is downloaded; a folder that lacks files gets an error naming them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from brushwork.core.errors import ConfigError, ModelFileError
from brushwork.datasets.taggers.base import Tagger
from brushwork.datasets.taggers.shapes import SHAPES_TAGGER

BUILTIN_TAGGERS = (SHAPES_TAGGER,)
TAGGERS_FOLDER = "taggers"
WD14_TAGS = "selected_tags.csv"
DEEPDANBOORU_TAGS = "tags.txt"
DEFAULT_MODEL = "model.onnx"


def is_folder_spec(spec: str) -> bool:
    """Whether `spec` names a path (an existing one, or one written with a separator)."""
    return Path(spec).expanduser().exists() or "/" in spec or "\\" in spec


def tagger_folders(roots: Sequence[Path]) -> dict[str, Path]:
    """`taggers/<name>/` folders of the library roots, by name (the first root wins)."""
    found: dict[str, Path] = {}
    for root in roots:
        models = root / "models" if (root / "models").is_dir() else root
        folder = models / TAGGERS_FOLDER
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                found.setdefault(child.name, child)
    return found


def available_taggers(roots: Sequence[Path]) -> list[str]:
    return [*BUILTIN_TAGGERS, *tagger_folders(roots)]


def load_tagger(spec: str, roots: Sequence[Path] = ()) -> Tagger:
    """The tagger `spec` names: `shapes`, a folder path, or a tagger folder's name."""
    if spec == SHAPES_TAGGER:
        from brushwork.datasets.taggers.shapes import ShapesTagger

        return ShapesTagger()
    if is_folder_spec(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise ConfigError(f"tagger folder {path} does not exist")
        return open_tagger_folder(path if path.is_dir() else path.parent)
    folders = tagger_folders(roots)
    lowered = {name.lower(): path for name, path in folders.items()}
    folder = folders.get(spec) or lowered.get(spec.lower())
    if folder is None:
        where = ", ".join(str(r / "models" / TAGGERS_FOLDER) for r in roots) or "no library root"
        raise ConfigError(
            f"no tagger named {spec!r} (available: {', '.join(available_taggers(roots))})",
            hint=f"put the tagger's folder (model.onnx + selected_tags.csv) in {where}, "
            "or pass the folder's path",
        )
    return open_tagger_folder(folder)


def _onnx_model(folder: Path) -> Path | None:
    preferred = folder / DEFAULT_MODEL
    if preferred.is_file():
        return preferred
    models = sorted(folder.glob("*.onnx"))
    return models[0] if models else None


def _is_blip(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and str(config.get("model_type", "")).lower() == "blip"


def open_tagger_folder(folder: Path) -> Tagger:
    """The tagger in `folder`, recognised by its files (see the module doc)."""
    from brushwork.datasets.taggers.onnx import deepdanbooru_tagger, wd14_tagger

    model = _onnx_model(folder)
    wd14_tags = folder / WD14_TAGS
    dd_tags = folder / DEEPDANBOORU_TAGS
    if model is not None and wd14_tags.is_file():
        return wd14_tagger(folder, model, wd14_tags)
    if model is not None and dd_tags.is_file():
        return deepdanbooru_tagger(folder, model)
    if _is_blip(folder):
        from brushwork.datasets.taggers.blip import BlipCaptioner

        return BlipCaptioner(folder)
    raise ModelFileError(folder, _missing_files_message(folder, model))


def _missing_files_message(folder: Path, model: Path | None) -> str:
    if model is not None:
        return (
            f"has {model.name} but no tag list: a WD14 tagger needs {WD14_TAGS}, "
            f"a DeepDanbooru export {DEEPDANBOORU_TAGS}"
        )
    if (folder / WD14_TAGS).is_file():
        return f"has {WD14_TAGS} but no {DEFAULT_MODEL} (the WD14 model)"
    if (folder / DEEPDANBOORU_TAGS).is_file():
        pickles = sorted(p.name for p in folder.glob("*.pt"))
        extra = (
            f"; {', '.join(pickles)} is a pickled PyTorch model, export it to ONNX"
            if pickles
            else ""
        )
        return f"has {DEEPDANBOORU_TAGS} but no .onnx model{extra}"
    return (
        f"is not a tagger folder: it needs {DEFAULT_MODEL} and {WD14_TAGS} (WD14), "
        f"an .onnx model and {DEEPDANBOORU_TAGS} (DeepDanbooru), "
        "or a BLIP config.json with its safetensors weights"
    )
