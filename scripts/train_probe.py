"""Rebuild the shipped probe (`src/brushwork/demo/probe.safetensors`) and measure it.

    .venv/bin/python scripts/train_probe.py [--seed 0] [--steps 1500] [--train-images 16000]
        [--eval-images 2000] [--eval-seed 1000] [--threads 1]

Trains the probe on freshly drawn shapes-world pictures (all shapes, held-out ones included;
every colour, background, size and fill), degraded like a small diffusion model's output. It
then reads the written file back and measures it on pictures drawn from `--eval-seed`, which
training never saw, both as drawn and degraded, plus how unsure it is of pictures with no
shape. Figures go to `--results` (default bench/results/probe.json). Seeded: the same command
on the same machine gives the same file.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from brushwork.demo.probe import PROBE_FILE, Probe
from brushwork.demo.probe_training import (
    Evaluation,
    ProbeTraining,
    all_kinds_specs,
    degrade,
    evaluate,
    render_batch,
    shapeless_batch,
    train_probe,
)

ROOT = Path(__file__).resolve().parents[1]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = ProbeTraining()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--train-images", type=int, default=defaults.train_images)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--eval-seed", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=PROBE_FILE)
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/probe.json")
    return parser.parse_args()


def _figures(evaluation: Evaluation) -> dict[str, object]:
    return {
        "images": evaluation.count,
        "accuracy_per_head": evaluation.per_head,
        "accuracy_all_heads": evaluation.all_heads,
        "per_shape": evaluation.per_shape,
    }


def _shapeless_confidence(probe: Probe, seed: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    images, _ = shapeless_batch(200, probe.config.input_size, generator, probe.config)
    probabilities = probe.predict_tensor(images)
    top = {head: probabilities[head].max(dim=1).values for head in ("shape", "color")}
    return {
        "images": 200,
        "mean_shape_confidence": float(top["shape"].mean()),
        "max_shape_confidence": float(top["shape"].max()),
        "mean_color_confidence": float(top["color"].mean()),
    }


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    settings = ProbeTraining(seed=args.seed, steps=args.steps, train_images=args.train_images)
    started = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        if step % 250 == 0 or step == settings.steps - 1:
            print(f"step {step:5d}  loss {loss:.4f}  {time.perf_counter() - started:6.1f} s")

    probe = train_probe(settings, progress=progress)
    train_seconds = time.perf_counter() - started
    probe.save(args.out, metadata={"training": {**settings.__dict__, "command": sys.argv}})
    shipped = Probe.load(args.out)

    specs = all_kinds_specs(args.eval_seed, args.eval_images)
    clean = render_batch(specs, settings.image_size).float() / 255
    degraded = degrade(clean, torch.Generator().manual_seed(args.eval_seed))
    as_drawn, imperfect = evaluate(shipped, specs, clean), evaluate(shipped, specs, degraded)
    results = {
        "benchmark": "accuracy of the shipped shapes-world probe on fresh generator pictures",
        "command": " ".join(["python", "scripts/train_probe.py", *sys.argv[1:]]),
        "seed": args.seed,
        "eval_seed": args.eval_seed,
        "training": settings.__dict__,
        "parameters": sum(p.numel() for p in shipped.net.parameters()),
        "file_bytes": args.out.stat().st_size,
        "as_drawn": _figures(as_drawn),
        "degraded": _figures(imperfect),
        "shapeless": _shapeless_confidence(shipped, args.eval_seed),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"as_drawn": as_drawn.per_head, "degraded": imperfect.per_head}, indent=2))


if __name__ == "__main__":
    main()
