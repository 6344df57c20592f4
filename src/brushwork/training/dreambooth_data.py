"""DreamBooth class images: find what each class has in `reg_data_dir`, and generate the
missing ones with the base model before training (diffusers' `num_class_images`).

Training never imports generation: the caller hands in `make_class_images(prompt, count,
(width, height), seed) -> list[PIL.Image]`, which makes `count` images with seeds `seed`,
`seed + 1`, ... (A1111's batch rule). A class's folder is the existing `<repeats>_<class>`
folder of `reg_data_dir` whose class matches the prompt, or a new `1_<class>` folder; each
generated image is `class-<NNNNN>.png` with its prompt as a `.txt` caption (and the generator's
infotext in the PNG, when it gives one), so kohya's caption rules train it on the class prompt.
Image N of a class is always made with seed `seed + N`: a run that stopped half-way continues
with the same images.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.training.data import dreambooth_subsets, parse_folder_name
from brushwork.training.data.scan import list_images
from brushwork.training.dreambooth_config import DreamBoothTrainingConfig

logger = logging.getLogger(__name__)

MakeClassImages = Callable[[str, int, tuple[int, int], int], list[Image.Image]]
ClassImageProgress = Callable[[str, int, int], None]  # (class prompt, done, total)
_UNSAFE_IN_NAMES = re.compile(r'[<>:"/\\|?*\x00-\x1f]+')


@dataclass(frozen=True)
class ClassImageNeed:
    """One class: its prompt, its folder under `reg_data_dir`, and how many images it lacks."""

    prompt: str
    folder: Path
    existing: int
    wanted: int

    @property
    def missing(self) -> int:
        return max(0, self.wanted - self.existing)


def class_word(instance_tokens: str) -> str | None:
    """The class of an instance folder's tokens: `sks dog` -> `dog` (the rare token is the
    first word); None when there is only one word."""
    words = instance_tokens.split()
    return " ".join(words[1:]) if len(words) > 1 else None


def class_prompts(config: DreamBoothTrainingConfig) -> tuple[str, ...]:
    """`class_prompt`, or the class word of every instance folder (in folder order)."""
    if config.class_prompt is not None:
        return (config.class_prompt.strip(),)
    assert config.train_data_dir is not None  # checked by the config
    prompts: list[str] = []
    for subset in dreambooth_subsets(config.train_data_dir):
        word = class_word(subset.class_tokens or "")
        if word is None:
            raise ConfigError(
                f"{subset.image_dir.name}: no class word after the instance token, so the class "
                "images' prompt is unknown",
                hint="name the folder '<repeats>_<token> <class>' (e.g. '10_sks dog'), or set "
                "class_prompt",
            )
        if word not in prompts:
            prompts.append(word)
    return tuple(prompts)


def folder_name(prompt: str) -> str:
    """`1_<prompt>`, without characters file systems refuse."""
    cleaned = _UNSAFE_IN_NAMES.sub(" ", prompt).strip(" .") or "class"
    return f"1_{' '.join(cleaned.split())[:120]}"


def class_image_needs(config: DreamBoothTrainingConfig) -> tuple[ClassImageNeed, ...]:
    """What each class has and lacks (empty when `num_class_images` is 0)."""
    if not config.num_class_images:
        return ()
    assert config.reg_data_dir is not None  # checked by the config
    reg = Path(config.reg_data_dir)
    if reg.exists() and not reg.is_dir():
        raise ConfigError(f"reg_data_dir {reg} is not a folder")
    needs = []
    for prompt in class_prompts(config):
        folder = _class_folder(reg, prompt)
        existing = len(list_images(folder)) if folder.is_dir() else 0
        needs.append(ClassImageNeed(prompt, folder, existing, config.num_class_images))
    return tuple(needs)


def _class_folder(reg: Path, prompt: str) -> Path:
    """The `<repeats>_<class>` folder of `reg` whose class is `prompt`, or a new `1_` one."""
    if reg.is_dir():
        for folder in sorted(p for p in reg.iterdir() if p.is_dir()):
            parsed = parse_folder_name(folder.name)
            if parsed is not None and parsed[1].strip().lower() == prompt.lower():
                return folder
    return reg / folder_name(prompt)


def ensure_class_images(
    config: DreamBoothTrainingConfig,
    make_class_images: MakeClassImages | None,
    *,
    progress: ClassImageProgress | None = None,
) -> list[Path]:
    """Generate the class images `reg_data_dir` lacks; the written files back. Without a
    generator, missing images are an error (before any training)."""
    needs = [need for need in class_image_needs(config) if need.missing]
    if not needs:
        return []
    if make_class_images is None:
        lacking = ", ".join(f"{n.folder} lacks {n.missing}" for n in needs)
        raise ConfigError(
            f"class images are missing ({lacking}) and no generator was given",
            hint="run `brushwork train dreambooth`, which generates them, or add images, or set "
            "num_class_images to 0",
        )
    written: list[Path] = []
    for need in needs:
        logger.info(
            "generating %d class images of %r into %s", need.missing, need.prompt, need.folder
        )
        written += _generate(config, need, make_class_images, progress)
    return written


def _generate(
    config: DreamBoothTrainingConfig,
    need: ClassImageNeed,
    make_class_images: MakeClassImages,
    progress: ClassImageProgress | None,
) -> list[Path]:
    base_seed = config.seed or 0
    written: list[Path] = []
    done = need.existing
    if progress is not None:
        progress(need.prompt, done, need.wanted)
    while done < need.wanted:
        count = min(config.sample_batch_size, need.wanted - done)
        images = make_class_images(need.prompt, count, config.resolution, base_seed + done)
        if len(images) != count:
            raise ConfigError(
                f"the class-image generator made {len(images)} images; {count} were asked for"
            )
        for offset, image in enumerate(images):
            written.append(_write_class_image(need, image, done + offset))
        done += count
        if progress is not None:
            progress(need.prompt, done, need.wanted)
    return written


def _write_class_image(need: ClassImageNeed, image: Image.Image, index: int) -> Path:
    path = _free_name(need.folder, index)
    png_info = PngImagePlugin.PngInfo()
    infotext = image.info.get("parameters")
    if isinstance(infotext, str):
        png_info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", pnginfo=png_info)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_bytes(path.with_suffix(".txt"), need.prompt.encode("utf-8"))
    return path


def _free_name(folder: Path, index: int) -> Path:
    """`class-<index>.png`, or the first free `class-<index>-<n>.png` beside user files."""
    path = folder / f"class-{index:05d}.png"
    number = 1
    while path.exists() or path.with_suffix(".txt").exists():
        path = folder / f"class-{index:05d}-{number}.png"
        number += 1
    return path


def describe_needs(needs: Sequence[ClassImageNeed]) -> str:
    """One line per class: what it has, wants and lacks (for dry runs and logs)."""
    return "\n".join(
        f"class {n.prompt!r}: {n.existing} of {n.wanted} images in {n.folder}"
        + (f", {n.missing} to generate" if n.missing else "")
        for n in needs
    )
