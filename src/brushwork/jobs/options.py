"""The server's settings as A1111's ``/sdapi/v1/options`` shows them (process state, not a file).

Only a few keys change what brushwork does (`EFFECTIVE`); the others are kept and echoed so
clients that post the whole dict back (Open WebUI) or toggle a flag and read it again (A1111's
own tests toggle ``send_seed``) work. Values of the effective keys are checked here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

from brushwork.core.errors import ConfigError

DEFAULT_OPTIONS: dict[str, Any] = {
    "sd_model_checkpoint": None,
    "sd_checkpoint_hash": None,
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "randn_source": "CPU",
    "emphasis": "Original",
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
    "send_seed": True,
    "send_size": True,
    "samples_save": True,
    "samples_format": "png",
    "grid_save": False,
    "return_grid": True,
    "enable_pnginfo": True,
    "live_previews_enable": True,
    "show_progress_every_n_steps": 10,
    "show_progress_type": "Approx cheap",
    "show_progress_grid": True,
    "show_progressbar": True,
    "sd_checkpoint_cache": 0,
    "sd_vae_checkpoint_cache": 0,
}
EFFECTIVE = (
    "sd_model_checkpoint",
    "sd_vae",
    "CLIP_stop_at_last_layers",
    "eta_noise_seed_delta",
    "randn_source",
    "emphasis",
    "return_grid",
    "live_previews_enable",
    "show_progress_every_n_steps",
    "show_progress_type",
)
PREVIEW_TYPES = ("Approx cheap", "Approx NN", "TAESD", "Full")
RANDN_SOURCES = {"CPU": "cpu", "NV": "nv", "cpu": "cpu", "nv": "nv"}


def check_option(key: str, value: Any) -> Any:
    """The value to store for an effective key; ConfigError naming the key otherwise."""
    if key == "CLIP_stop_at_last_layers":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
            raise ConfigError(f"{key} must be an integer from 1 to 12, got {value!r}")
    elif key == "eta_noise_seed_delta":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
    elif key == "randn_source":
        if value not in RANDN_SOURCES:
            raise ConfigError(f"{key} must be CPU or NV, got {value!r}")
    elif key in ("eta_ancestral", "eta_ddim"):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    elif key in ("sd_model_checkpoint", "sd_vae", "emphasis") and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    elif key in ("return_grid", "live_previews_enable") and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif key == "show_progress_every_n_steps":
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ConfigError(f"{key} must be an integer from -1 up, got {value!r}")
    elif key == "show_progress_type" and value not in PREVIEW_TYPES:
        raise ConfigError(f"{key} must be one of {', '.join(PREVIEW_TYPES)}, got {value!r}")
    return value


class Options:
    """The current options (thread-safe)."""

    def __init__(self) -> None:
        self._values = dict(DEFAULT_OPTIONS)
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def get(self, key: str) -> Any:
        with self._lock:
            return self._values.get(key)

    def update(self, values: Mapping[str, Any]) -> None:
        """Store values (already checked and resolved by the caller)."""
        with self._lock:
            self._values.update(values)


def request_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """GenerationRequest fields that the options set (clip skip, ENSD, noise source, emphasis)."""
    return {
        "clip_skip": options["CLIP_stop_at_last_layers"],
        "eta_noise_seed_delta": options["eta_noise_seed_delta"],
        "rng": RANDN_SOURCES[options["randn_source"]],
        "emphasis": options["emphasis"],
    }
