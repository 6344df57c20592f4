"""Quality benchmark in the shapes world: what the demo model draws, and what each trainer teaches it.

    .venv/bin/python bench/quality.py [--seeds 5] [--only adherence,autoencoder,sweep,ti,lora,dreambooth,hypernetwork,ti-known]
                                      [--threads 2] [--cfg 7] [--output bench/results/quality.json]

* adherence: the built-in demo model on the fixed prompt set (every base shape in every colour,
  `evaluation.quality.base_prompt_specs`), `--seeds` seeds each, DPM++ 2M, 20 steps, CFG `--cfg` (7, as A1111), 64 px;
  share of pictures whose probed shape and colour match the prompt (target >= 90%).
* concept learning: a held-out shape (heart) taught under the trigger word `sks` from 20 generated
  pictures with each trainer (textual inversion, LoRA, DreamBooth, hypernetwork). adoption = share
  of trigger-prompt pictures (`a red sks on a purple background`, 4 colours x seeds) probed as a
  heart; preservation = adherence on the base prompts with the trained network in place. The
  untrained rate (the base model on the trigger prompts) is reported beside them.
* autoencoder: the probe on VAE round trips of 256 fresh generator pictures (the ceiling of the
  figures above) and their mean absolute error in 0-255 levels.
* ti-known: textual inversion, 100 steps, teaching `sks` a shape the base model already draws
  (a star): adoption before and after.
* LoRA strength sweep 0 .. 1: adoption at each strength; strength 0 gives the base images exactly.

Every figure goes to `--output` with the settings, the thread count and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from brushwork.core.settings import Settings
from brushwork.demo.dataset import write_dataset
from brushwork.demo.model import demo_model_file
from brushwork.demo.probe import Probe
from brushwork.evaluation.quality import DrawSettings, adherence, adoption
from brushwork.generation import GenerationRequest, Generator
from brushwork.generation.request import LoraChoice
from brushwork.library.catalog import Library
from brushwork.loading import load_model

HELD_OUT, TRIGGER, TRAIN_IMAGES = "heart", "sks", 20
# `ti-known`: a new word for a shape the base model draws (what tests/demo/test_demo_concepts.py
# checks), beside the held-out shape that no short run teaches a four-shape model by a word alone
KNOWN_SHAPE, KNOWN_STEPS = "star", 100
# what every picture of a run is drawn with (`--cfg` changes the guidance scale)
DRAW = DrawSettings()


def _library(root: Path, data_dir: Path) -> Library:
    return Library.open(Settings(roots=(root,), data_dir=data_dir))


def _drawer(model_file: Path, root: Path, data: Path) -> Callable[[GenerationRequest], list[Any]]:
    generator = Generator(
        load_model(model_file, device="cpu", precision="fp32"), library=_library(root, data)
    )
    return lambda request: generator.generate(request).images


def _concept_folder(work: Path, shape: str = HELD_OUT) -> Path:
    folder = work / ("concept" if shape == HELD_OUT else f"concept-{shape}")
    if not folder.exists():
        write_dataset(
            folder, (shape,), TRAIN_IMAGES, seed=4242, repeats=1, name=TRIGGER, trigger=TRIGGER
        )
    return folder


def _root(work: Path, name: str) -> Path:
    root = work / name
    for folder in ("models/Stable-diffusion", "models/Lora", "embeddings", "models/hypernetworks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def train_lora_concept(model: Path, work: Path, steps: int) -> Path:
    from brushwork.training.config import LoraTrainingConfig
    from brushwork.training.lora import train_lora

    config = LoraTrainingConfig(
        pretrained_model_name_or_path=str(model),
        train_data_dir=_concept_folder(work),
        output_dir=work / "lora-run",
        output_name="sks-lora",
        resolution=(64, 64),
        train_batch_size=4,
        network_dim=8,
        network_alpha=8,
        learning_rate=1e-3,
        max_train_steps=steps,
        cache_latents=True,
        seed=1,
    )
    return train_lora(config, model).result.final_file


def train_ti_concept(model: Path, work: Path, steps: int, shape: str = HELD_OUT) -> Path:
    from brushwork.training.textual_inversion import EmbeddingTrainingConfig, train_embedding

    config = EmbeddingTrainingConfig(
        pretrained_model_name_or_path=str(model),
        train_data_dir=_concept_folder(work, shape),
        output_dir=work / ("ti-run" if shape == HELD_OUT else f"ti-run-{shape}"),
        output_name=TRIGGER,
        init_word="shape",
        num_vectors_per_token=2,
        resolution=(64, 64),
        train_batch_size=4,
        template_filename="filewords",
        learning_rate="0.01",
        max_train_steps=steps,
        save_every_n_steps=None,
        seed=1,
    )
    return train_embedding(config, model).result.final_file


def train_hypernetwork_concept(model: Path, work: Path, steps: int) -> Path:
    from brushwork.training.hypernetwork import HypernetworkTrainingConfig, train_hypernetwork

    config = HypernetworkTrainingConfig(
        pretrained_model_name_or_path=str(model),
        train_data_dir=_concept_folder(work),
        output_dir=work / "hn-run",
        output_name="sks-hn",
        resolution=(64, 64),
        train_batch_size=4,
        template_filename="filewords",
        learning_rate="0.001",
        max_train_steps=steps,
        save_every_n_steps=None,
        seed=1,
    )
    return train_hypernetwork(config, model).result.final_file


def train_dreambooth_concept(model: Path, work: Path, steps: int) -> Path:
    from brushwork.training.dreambooth import train_dreambooth
    from brushwork.training.dreambooth_config import DreamBoothTrainingConfig

    classes = work / "class"
    if not classes.exists():  # prior preservation: pictures of the base shapes, from the generator
        write_dataset(
            classes, ("circle", "square", "triangle", "star"), 40, seed=99, repeats=1, name="shape"
        )
    config = DreamBoothTrainingConfig(
        pretrained_model_name_or_path=str(model),
        train_data_dir=_concept_folder(work),
        reg_data_dir=classes,
        prior_loss_weight=1.0,
        output_dir=work / "db-run",
        output_name="sks-db",
        resolution=(64, 64),
        train_batch_size=4,
        learning_rate=1e-4,
        max_train_steps=steps,
        cache_latents=True,
        save_precision="fp16",
        seed=1,
    )
    return train_dreambooth(config, model).result.final_file


def _concept(
    name: str, model: Path, work: Path, probe: Probe, seeds: list[int], steps: int
) -> dict[str, Any]:
    started = time.perf_counter()
    root = _root(work, f"lib-{name}")
    settings = DRAW
    extra: dict[str, Any] = {}
    model_for_drawing = model
    if name == "lora":
        trained = train_lora_concept(model, work, steps)
        shutil.copy(trained, root / "models/Lora" / trained.name)
        extra = {"loras": (LoraChoice(trained.stem, 1.0),)}
    elif name == "ti":
        trained = train_ti_concept(model, work, steps)
        shutil.copy(trained, root / "embeddings" / trained.name)
    elif name == "hypernetwork":
        trained = train_hypernetwork_concept(model, work, steps)
        shutil.copy(trained, root / "models/hypernetworks" / trained.name)
        settings = dataclasses.replace(DRAW, prompt_suffix=f" <hypernet:{trained.stem}:1>")
    else:
        trained = train_dreambooth_concept(model, work, steps)
        model_for_drawing = trained
    train_s = time.perf_counter() - started
    draw = _drawer(model_for_drawing, root, work / "index")
    taught = adoption(draw, probe, HELD_OUT, TRIGGER, seeds, settings, request_extra=extra)
    kept = adherence(draw, probe, seeds, settings, request_extra=extra)
    return {
        "trainer": name,
        "steps": steps,
        "train_seconds": round(train_s, 1),
        "file": trained.name,
        "adoption": taught.as_dict(),
        "preservation": kept.as_dict(),
    }


def _known_word(model: Path, work: Path, probe: Probe, seeds: list[int]) -> dict[str, Any]:
    started = time.perf_counter()
    trained = train_ti_concept(model, work, KNOWN_STEPS, KNOWN_SHAPE)
    train_s = time.perf_counter() - started
    root = _root(work, "lib-ti-known")
    shutil.copy(trained, root / "embeddings" / trained.name)
    before = adoption(
        _drawer(model, _root(work, "lib-base"), work / "index"),
        probe,
        KNOWN_SHAPE,
        TRIGGER,
        seeds,
        DRAW,
    )
    after = adoption(_drawer(model, root, work / "index"), probe, KNOWN_SHAPE, TRIGGER, seeds, DRAW)
    return {
        "trainer": "ti",
        "steps": KNOWN_STEPS,
        "train_seconds": round(train_s, 1),
        "untrained": before.as_dict(),
        "adoption": after.as_dict(),
    }


def _autoencoder(model_file: Path, probe: Probe, count: int = 256) -> dict[str, Any]:
    """The probe on VAE round trips (encoder mean, decode) of fresh generator pictures: the
    ceiling of every figure read from generated pictures."""
    import random

    from brushwork.demo.probe import images_to_tensor
    from brushwork.demo.shapes import BASE_SHAPES, render, sample_specs
    from brushwork.generation.imaging import sample_to_image

    vae = load_model(model_file, device="cpu", precision="fp32").vae
    specs = sample_specs(random.Random(555), BASE_SHAPES, count)
    pixels = images_to_tensor([render(spec) for spec in specs]) * 2 - 1
    with torch.no_grad():
        decoded = vae.decode(vae.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
    trips = [sample_to_image(sample) for sample in decoded]
    read = probe.predict(trips)
    right = [
        (r.shape == s.shape, r.color == s.color, r.background == s.background)
        for r, s in zip(read, specs, strict=True)
    ]
    return {
        "images": count,
        "shape": round(sum(a for a, _, _ in right) / count, 4),
        "color": round(sum(b for _, b, _ in right) / count, 4),
        "background": round(sum(c for _, _, c in right) / count, 4),
        "all_three": round(sum(all(x) for x in right) / count, 4),
        "mean_abs_error_levels": round(float((decoded - pixels).abs().mean()) * 127.5, 2),
    }


def _sweep(model: Path, work: Path, probe: Probe, seeds: list[int], steps: int) -> dict[str, Any]:
    lora_file = work / "lora-run" / "sks-lora.safetensors"
    if not lora_file.exists():
        train_lora_concept(model, work, steps)
    root = _root(work, "lib-sweep")
    shutil.copy(lora_file, root / "models/Lora" / lora_file.name)
    draw = _drawer(model, root, work / "index")
    rows = []
    for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
        extra = {"loras": (LoraChoice(lora_file.stem, strength),)}
        rows.append(
            {
                "strength": strength,
                **adoption(
                    draw, probe, HELD_OUT, TRIGGER, seeds, DRAW, request_extra=extra
                ).as_dict(),
            }
        )
    settings = DRAW
    base = draw(settings.request(f"a red {TRIGGER} on a purple background", 0))
    zero = draw(
        settings.request(
            f"a red {TRIGGER} on a purple background", 0, loras=(LoraChoice(lora_file.stem, 0.0),)
        )
    )
    same = all(a.tobytes() == b.tobytes() for a, b in zip(base, zero, strict=True))
    return {"rows": rows, "strength_0_equals_base": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--only", default="adherence,autoencoder,sweep,ti,lora,dreambooth,hypernetwork,ti-known"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each trainer")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--cfg", type=float, default=DrawSettings.cfg_scale, help="CFG scale")
    parser.add_argument("--output", type=Path, default=Path("bench/results/quality.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global DRAW
    DRAW = dataclasses.replace(DRAW, cfg_scale=args.cfg)
    model = args.model or demo_model_file()
    seeds = list(range(args.seeds))
    probe = Probe.load()
    wanted = args.only.split(",")
    figures: dict[str, Any] = {
        "benchmark": "shapes-world quality of the demo model and of each trainer",
        "command": "python bench/quality.py " + " ".join(sys.argv[1:]),
        "model": model.name,
        "seeds": seeds,
        "draw": dataclasses.asdict(DRAW),
        "threads": args.threads,
        "load_average_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        empty = _root(work, "lib-base")
        if "adherence" in wanted:
            started = time.perf_counter()
            report = adherence(_drawer(model, empty, work / "index"), probe, seeds, DRAW)
            figures["adherence"] = report.as_dict() | {
                "seconds": round(time.perf_counter() - started, 1)
            }
            print("adherence", json.dumps(figures["adherence"]), flush=True)
            untrained = adoption(
                _drawer(model, empty, work / "index"), probe, HELD_OUT, TRIGGER, seeds, DRAW
            )
            figures["untrained_adoption"] = untrained.as_dict()
        for name in ("ti", "lora", "dreambooth", "hypernetwork"):
            if name in wanted:
                figures.setdefault("concepts", {})[name] = _concept(
                    name, model, work, probe, seeds, args.steps
                )
                print(name, json.dumps(figures["concepts"][name]), flush=True)
        if "autoencoder" in wanted:
            figures["autoencoder_round_trip"] = _autoencoder(model, probe)
            print("autoencoder", json.dumps(figures["autoencoder_round_trip"]), flush=True)
        if "ti-known" in wanted:
            figures["ti_known_shape"] = _known_word(model, work, probe, seeds)
            print("ti-known", json.dumps(figures["ti_known_shape"]), flush=True)
        if "sweep" in wanted:
            figures["lora_strength_sweep"] = _sweep(model, work, probe, seeds, args.steps)
            print("sweep", json.dumps(figures["lora_strength_sweep"]), flush=True)
    figures["load_average_after"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    args.output.write_text(json.dumps(previous | figures, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
