"""Benchmark of the samplers floor: solver overhead per step and seeded-noise throughput.

    .venv/bin/python bench/samplers.py [--steps 30] [--batch 4] [--size 64] [--output PATH]

1. Runs every sampler for `--steps` steps on a `--batch` x 4 x `--size` x `--size` latent (a
   `--size * 8` pixel image) with an instant toy denoiser, so the time is the solver's own
   overhead per step (the UNet is what costs in real use).
2. Draws the initial noise plus `--steps` ancestral draws for the batch from each RNG source
   (`cpu`: torch's generator, `nv`: our Philox 4x32-10), in milliseconds per image draw.

Figures go to `--output` (default bench/results/samplers.json). One torch thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import Tensor

from brushwork.samplers import batch_noise, list_samplers, make_sigmas, sd_sigmas


def _toy_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    s = sigma.reshape(-1, 1, 1, 1)
    return (0.25 * x + s**2 * 0.5) / (0.25 + s**2)


def _solver_overhead(steps: int, batch: int, size: int) -> dict[str, float]:
    table = sd_sigmas()
    shape = (4, size, size)
    results: dict[str, float] = {}
    for sampler in list_samplers():
        sigmas = make_sigmas(sampler, steps, table)
        noise = batch_noise(shape, list(range(batch)))
        x = noise.first() * sigmas[0]
        start = time.perf_counter()
        sampler(_toy_denoiser, x, sigmas, noise=noise)
        results[sampler.name] = (time.perf_counter() - start) / (len(sigmas) - 1) * 1000
    return results


def _noise_throughput(steps: int, batch: int, size: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for source in ("cpu", "nv"):
        noise = batch_noise((4, size, size), list(range(batch)), source=source)  # type: ignore[arg-type]
        start = time.perf_counter()
        for _ in range(steps + 1):
            noise.next()
        results[source] = (time.perf_counter() - start) / ((steps + 1) * batch) * 1000
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="latent side (image side / 8)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/samplers.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "steps": args.steps,
        "batch": args.batch,
        "latent": [4, args.size, args.size],
        "solver_ms_per_step": _solver_overhead(args.steps, args.batch, args.size),
        "noise_ms_per_image_draw": _noise_throughput(args.steps, args.batch, args.size),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
