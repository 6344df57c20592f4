"""Benchmark of the patching floor: LoRA apply/restore against diffusers, and the cost per step.

    .venv/bin/python bench/networks.py [--ranks 32 128] [--threads 2] [--repeats 2] [--output PATH]

On the SD1.5-size UNet and text encoder (random weights, fp32, `build_components("sd1",
size="full")`), for a kohya LoRA of each rank over kohya's default targets (every Linear and 1x1
conv of the UNet transformers; text-encoder q/k/v/out_proj and fc1/fc2; random weights):

1. ours: read the file, merge it (`LoraPatcher.apply`), restore (`LoraPatcher.restore`);
2. diffusers on the same modules: `load_lora_weights` (reads the file too), `fuse_lora`,
   `unfuse_lora`, `unload_lora_weights`;
3. one UNet forward (batch 1, 64x64 latent = 512 px) without and with a LoRA merged.

Each timing is the best of `--repeats`. Figures go to `--output` (default
bench/results/networks.json). The machine may be shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from brushwork.formats.lora import LoraModule, LoraNetwork, read_lora, write_lora
from brushwork.patching.lora import LoraApplication, LoraPatcher
from brushwork.testing.factory import Components, build_components, tokenizer


def _best(repeats: int, run: Callable[[], Any], after: Callable[[], Any] | None = None) -> float:
    """Best wall time of `run` over `repeats` (`after` runs untimed after each)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if after is not None:
            after()
    return min(times)


def _kohya_network(c: Components, rank: int, seed: int) -> LoraNetwork:
    gen = torch.Generator().manual_seed(seed)
    modules = {}
    layers = [("unet", n, m) for n, m in c.unet.named_modules() if ".attentions." in n]
    te = c.text_encoders["text_encoder"]
    layers += [("text_encoder", n, m) for n, m in te.named_modules() if ".self_attn." in n]
    layers += [("text_encoder", n, m) for n, m in te.named_modules() if ".mlp." in n]
    for component, name, module in layers:
        if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            continue
        w = module.weight
        down = torch.randn(rank, *w.shape[1:], generator=gen) * 0.01
        up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []), generator=gen) * 0.01
        target = f"{component}.{name}"
        modules[target] = LoraModule.lora(target, down, up, alpha=rank / 2)
    return LoraNetwork(modules)


def _checksum(c: Components) -> float:
    with torch.no_grad():
        models = [c.unet, c.text_encoders["text_encoder"]]
        return float(sum(p.double().sum() for m in models for p in m.parameters()))


def _ours(c: Components, path: Path, repeats: int) -> dict[str, float]:
    patcher = LoraPatcher(unet=c.unet, text_encoders=c.text_encoders)
    holder: dict[str, LoraApplication] = {}

    def read() -> None:
        holder["app"] = LoraApplication(read_lora(path), path.stem)

    read_s = _best(repeats, read)
    apply_s = _best(repeats, lambda: patcher.apply([holder["app"]]), patcher.restore)
    patcher.apply([holder["app"]])
    restore_s = _best(1, patcher.restore)
    return {
        "read_s": read_s,
        "apply_s": apply_s,
        "restore_s": restore_s,
        "total_s": read_s + apply_s + restore_s,
        "modules": len(holder["app"].network.modules),
    }


def _diffusers(c: Components, path: Path, repeats: int) -> dict[str, float]:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=c.vae,
        text_encoder=c.text_encoders["text_encoder"],
        tokenizer=tokenizer(),
        unet=c.unet,
        scheduler=EulerDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    runs = []
    for _ in range(repeats):
        step = {}
        for name, action in (
            ("load_s", lambda: pipe.load_lora_weights(str(path))),
            ("fuse_s", pipe.fuse_lora),
            ("unfuse_s", pipe.unfuse_lora),
            ("unload_s", pipe.unload_lora_weights),
        ):
            start = time.perf_counter()
            action()
            step[name] = time.perf_counter() - start
        step["total_s"] = sum(step.values())
        runs.append(step)
    return min(runs, key=lambda r: r["total_s"])


def _forward(c: Components, path: Path, repeats: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 64, 64, generator=gen)
    context = torch.randn(1, 77, c.unet.config.cross_attention_dim, generator=gen)

    def forward() -> None:
        with torch.no_grad():
            c.unet(sample, 500, encoder_hidden_states=context)

    forward()  # warm-up
    patcher = LoraPatcher(unet=c.unet, text_encoders=c.text_encoders)
    app = LoraApplication(read_lora(path), path.stem)
    plain, merged = [], []
    for _ in range(repeats):  # interleaved, so contention hits both alike
        plain.append(_best(1, forward))
        patcher.apply([app])
        merged.append(_best(1, forward))
        patcher.restore()
    return {"without_lora_s": min(plain), "with_lora_s": min(merged)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--size", choices=["full", "tiny"], default="full", help="tiny: a smoke run"
    )
    parser.add_argument("--output", type=Path, default=Path("bench/results/networks.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    start = time.perf_counter()
    c = build_components("sd1", size=args.size)
    build_s = time.perf_counter() - start
    report: dict[str, Any] = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "model": f"SD1 UNet + CLIP-L text encoder, {args.size} size, random weights, float32",
        "build_s": build_s,
        "ranks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rank in args.ranks:
            path = Path(tmp) / f"rank{rank}.safetensors"
            write_lora(path, _kohya_network(c, rank, seed=rank), family="sd1")
            before = _checksum(c)
            ours = _ours(c, path, args.repeats)
            restored_exactly = _checksum(c) == before
            theirs = _diffusers(c, path, args.repeats)
            report["ranks"][str(rank)] = {
                "file_mb": path.stat().st_size / 2**20,
                "ours": ours,
                "ours_restored_exactly": restored_exactly,
                "diffusers": theirs,
                "apply_ratio_diffusers_over_ours": (theirs["load_s"] + theirs["fuse_s"])
                / (ours["read_s"] + ours["apply_s"]),
                "total_ratio_diffusers_over_ours": theirs["total_s"] / ours["total_s"],
            }
            print(json.dumps({rank: report["ranks"][str(rank)]}, indent=2), flush=True)
        path = Path(tmp) / f"rank{args.ranks[0]}.safetensors"
        forward = _forward(c, path, args.repeats)
    forward["ratio_with_over_without"] = forward["with_lora_s"] / forward["without_lora_s"]
    report["unet_forward_64x64"] = forward
    report["load_average_after"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
