"""Preview images during training: kohya's prompt file, the request handed to the preview
callable, and where the images go.

Prompt file (`sample_prompts`, sd-scripts' `.txt` syntax): one prompt per line, `#` lines and
blank lines skipped; options follow ` --`: `--n` negative prompt, `--w`/`--h` size (floored to
multiples of 8), `--d` seed, `--s` steps (1-1000), `--l` CFG scale, `--ss` sampler. Defaults:
512x512, 30 steps, CFG 7.5, a random seed, `sample_sampler`. Unlike sd-scripts, an unknown or
malformed option is reported (with its line), not silently dropped. A `.json` file holding a list
of `{prompt, negative_prompt, width, height, seed, sample_steps, scale, sample_sampler}` works too.

Images: `<output_dir>/sample/<name>_<e000004|000500>_<NN>_<YYYYmmddHHMMSS>_<seed>.png`, with the
A1111 infotext in the PNG's `parameters` chunk.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.prompt import format_infotext
from brushwork.training.state import RngSnapshot

logger = logging.getLogger(__name__)

# sd-scripts' sample_sampler names -> A1111 sampler names (brushwork.samplers)
KOHYA_SAMPLERS = {
    "ddim": "DDIM",
    "pndm": "PLMS",
    "lms": "LMS",
    "k_lms": "LMS",
    "euler": "Euler",
    "k_euler": "Euler",
    "euler_a": "Euler a",
    "k_euler_a": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "k_dpm_2": "DPM2",
    "dpm_2_a": "DPM2 a",
    "k_dpm_2_a": "DPM2 a",
    "dpmsolver": "DPM++ 2M",
    "dpmsolver++": "DPM++ 2M",
    "dpmsingle": "DPM++ 2M",
}
_MODEL_SPECIFIC = {"g", "cn", "ctr", "rcfg", "fs", "am", "f", "t"}


@dataclass(frozen=True)
class PreviewRequest:
    """One preview image to make with the model as it is now (LoRA applied, eval mode)."""

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    seed: int = -1  # -1: a random seed is drawn (outside the training RNG)
    steps: int = 30
    cfg_scale: float = 7.5
    sampler_name: str = "DDIM"


Preview = Callable[[PreviewRequest], list[Image.Image]]


@dataclass(frozen=True)
class PromptFile:
    requests: tuple[PreviewRequest, ...]
    warnings: tuple[str, ...] = ()


def sampler_for(kohya_name: str) -> str:
    """An sd-scripts `sample_sampler` name as the A1111 name (A1111 names pass through)."""
    return KOHYA_SAMPLERS.get(kohya_name.lower(), kohya_name)


def parse_prompt_line(
    line: str, defaults: PreviewRequest, where: str
) -> tuple[PreviewRequest, list[str]]:
    """One prompt line with its ` --x value` options."""
    prompt, *options = line.split(" --")
    request = replace(defaults, prompt=prompt.strip())
    warnings: list[str] = []
    for option in options:
        flag, _, value = option.strip().partition(" ")
        value = value.strip()
        try:
            request = _apply_option(request, flag, value)
        except ValueError:
            warnings.append(f"{where}: --{flag} {value!r} is not a valid value; ignored")
        except KeyError:
            what = "is for other model types" if flag in _MODEL_SPECIFIC else "is not known"
            warnings.append(f"{where}: option --{flag} {what}; ignored")
    return request, warnings


def _apply_option(request: PreviewRequest, flag: str, value: str) -> PreviewRequest:
    if flag == "n":
        return replace(request, negative_prompt=value)
    if flag == "w":
        return replace(request, width=max(64, int(value) // 8 * 8))
    if flag == "h":
        return replace(request, height=max(64, int(value) // 8 * 8))
    if flag == "d":
        return replace(request, seed=int(value))
    if flag == "s":
        return replace(request, steps=min(max(int(value), 1), 1000))
    if flag == "l":
        return replace(request, cfg_scale=float(value))
    if flag == "ss":
        if not value:
            raise ValueError(value)
        return replace(request, sampler_name=sampler_for(value))
    raise KeyError(flag)


def parse_prompt_text(text: str, *, sampler: str = "ddim", source: str = "prompts") -> PromptFile:
    defaults = PreviewRequest(prompt="", sampler_name=sampler_for(sampler))
    requests: list[PreviewRequest] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        request, line_warnings = parse_prompt_line(line, defaults, f"{source} line {number}")
        warnings.extend(line_warnings)
        if request.prompt:
            requests.append(request)
    return PromptFile(tuple(requests), tuple(warnings))


def _from_json(items: Any, sampler: str, source: str) -> PromptFile:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: a JSON prompt file must hold a list of prompts")
    names = {
        "prompt": "prompt",
        "negative_prompt": "negative_prompt",
        "width": "width",
        "height": "height",
        "seed": "seed",
        "sample_steps": "steps",
        "scale": "cfg_scale",
        "sample_sampler": "sampler_name",
    }
    requests, warnings = [], []
    for index, item in enumerate(items):
        values = {names[k]: v for k, v in item.items() if k in names}
        warnings += [
            f"{source} item {index}: {k!r} is not known; ignored" for k in item if k not in names
        ]
        values["sampler_name"] = sampler_for(str(values.get("sampler_name", sampler)))
        requests.append(PreviewRequest(**values))
    return PromptFile(tuple(requests), tuple(warnings))


def read_prompt_file(path: Path, *, sampler: str = "ddim") -> PromptFile:
    """The sample prompts of `path` (.txt in sd-scripts' syntax, or .json)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"sample_prompts {path} cannot be read: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            return _from_json(json.loads(text), sampler, path.name)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"sample_prompts {path}: {exc}") from None
    if path.suffix.lower() == ".toml":
        raise ConfigError(f"sample_prompts {path}: TOML prompt files are not supported; use .txt")
    prompts = parse_prompt_text(text, sampler=sampler, source=path.name)
    if not prompts.requests:
        raise ConfigError(f"sample_prompts {path} holds no prompt")
    return prompts


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Sampling must not change what training draws next: save and restore every RNG."""
    snapshot = RngSnapshot.capture()
    try:
        yield
    finally:
        snapshot.restore()


def with_seed(request: PreviewRequest) -> PreviewRequest:
    """A random seed for `-1`, drawn from the OS (the training RNG is not touched)."""
    if request.seed >= 0:
        return request
    return replace(request, seed=random.SystemRandom().randrange(2**32))


def sample_file_name(output_name: str, label: str, index: int, seed: int) -> str:
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    safe = re.sub(r"[^\w.-]", "_", output_name)
    return f"{safe}_{label}_{index:02d}_{stamp}_{seed}.png"


def save_preview(
    image: Image.Image, path: Path, request: PreviewRequest, extra: dict[str, object]
) -> Path:
    """Write the PNG with its infotext (the image's own, when the generator gave one)."""
    infotext = image.info.get("parameters") if isinstance(image.info, dict) else None
    if not isinstance(infotext, str):
        params: dict[str, object] = {
            "Steps": request.steps,
            "Sampler": request.sampler_name,
            "CFG scale": request.cfg_scale,
            "Seed": request.seed,
            "Size": f"{request.width}x{request.height}",
        }
        infotext = format_infotext(request.prompt, request.negative_prompt, params | extra)
    png_info = PngImagePlugin.PngInfo()
    png_info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def run_previews(
    preview: Preview,
    requests: Sequence[PreviewRequest],
    folder: Path,
    output_name: str,
    label: str,
    extra: dict[str, object],
) -> list[Path]:
    """Make and save every preview; training RNG untouched, a failing preview only warned about."""
    written: list[Path] = []
    with preserved_rng(), torch.no_grad():
        for index, request in enumerate(requests):
            seeded = with_seed(request)
            try:
                images = preview(seeded)
            except (BrushworkError, RuntimeError, ValueError) as exc:
                logger.warning("preview %d (%r) failed: %s", index, seeded.prompt[:40], exc)
                continue
            for number, image in enumerate(images):
                name = sample_file_name(output_name, label, index, seeded.seed)
                if number:
                    name = name.replace(".png", f"-{number}.png")
                written.append(save_preview(image, folder / name, seeded, extra))
    return written
