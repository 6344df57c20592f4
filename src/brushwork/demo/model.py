"""The built-in demo model: where it ships, and how to rebuild it.

`shapes-sd1.safetensors` is a small SD1-family checkpoint (CLIP text encoder with the real
tokenizer, UNet2DConditionModel, AutoencoderKL) trained from scratch by brushwork's own trainer
on the shapes world (`brushwork demo build`). It ships inside the package as a read-only model
root in the A1111 layout (`demo/library/models/Stable-diffusion/`), which the faces add to the
library as a built-in root: it is listed and found by name like any checkpoint, and it is the
default model when the user's library has none.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_NAME = "shapes-sd1"
_PACKAGE = Path(__file__).parent
_ROOT = _PACKAGE / "library"
MODEL_CONFIG_FILE = _PACKAGE / "shapes-model.json"
TRAINING_CONFIG_FILE = _PACKAGE / "shapes-train.toml"


def demo_model_file() -> Path:
    """Where the shipped demo checkpoint is (it may be missing in a source tree being rebuilt)."""
    return _ROOT / "models" / "Stable-diffusion" / f"{DEMO_MODEL_NAME}.safetensors"


def builtin_roots() -> tuple[Path, ...]:
    """The model roots shipped with brushwork: the demo model's, when its checkpoint is there."""
    return (_ROOT,) if demo_model_file().is_file() else ()
