"""Benchmark of LoRA training: brushwork's loop against a plain diffusers + peft loop.

    .venv/bin/python bench/train_lora.py [--full] [--threads 2] [--steps N] [--output PATH]

Both loops train the same LoRA (kohya's default UNet targets: every Linear and 1x1 conv of the
UNet transformers, rank 4, alpha 4, UNet only, text encoder frozen) on the same random-weight
model and the same generated images, batch 1, fp32 (bf16 autocast on a GPU), AdamW lr 1e-4,
gradient clipping 1.0, VAE encoding at every step (no latent cache), no gradient checkpointing:

* brushwork: `brushwork.training.lora.train_lora` from a checkpoint file (the whole loop:
  dataset, buckets, captions, accelerate, saving at the end);
* diffusers: the loop of diffusers' `train_text_to_image_lora.py` example, written out
  (`unet.add_adapter(LoraConfig(...))`, `DDPMScheduler.add_noise`, `accelerator.backward`).

Sizes: `tiny` (the test models, 64 px) always; `--full` adds the SD1.5-size model at 256 px
(32x32 latents). The model file and images are made first in a process of their own; each loop
then runs in its own process, so peak memory (max RSS; on CUDA the peak allocated) is its own. Seconds per step exclude the first `--warmup` steps. Results go to
`--output` (default bench/results/train_lora.json) with the thread count and the load average
(the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

SIZES = {"tiny": 64, "full": 256}
RANK, ALPHA, LR, IMAGES = 4, 4.0, 1e-4, 4


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _peak_memory_mib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _prepare_files(work: Path, size: str) -> tuple[Path, Path]:
    """The model as a checkpoint file and a kohya image folder (same for both loops)."""
    from brushwork.testing.factory import build_components, write_checkpoint_file

    checkpoint = work / f"{size}.safetensors"
    if not checkpoint.exists():
        dtype = torch.float16 if size == "full" else None
        write_checkpoint_file(build_components("sd1", size=size), checkpoint, dtype=dtype)
    folder = work / "data" / "1_cat"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = SIZES[size]
    for i in range(IMAGES):
        image = rng.integers(0, 255, (pixels, pixels, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a photo of a cat, red", encoding="utf-8")
    return checkpoint, work / "data"


def run_brushwork(checkpoint: Path, data: Path, size: str, steps: int, out: Path) -> list[float]:
    from brushwork.training.config_file import resolve_config
    from brushwork.training.engine import Hooks
    from brushwork.training.lora import train_lora

    config, _ = resolve_config(
        {
            "pretrained_model_name_or_path": str(checkpoint),
            "train_data_dir": str(data),
            "output_dir": str(out),
            "output_name": "bench",
            "resolution": SIZES[size],
            "max_train_steps": steps,
            "network_dim": RANK,
            "network_alpha": ALPHA,
            "learning_rate": LR,
            "network_train_unet_only": True,
            "mixed_precision": "bf16" if torch.cuda.is_available() else "no",
            "seed": 0,
        }
    )
    stamps: list[float] = []
    hooks = Hooks(on_progress=lambda _event: stamps.append(time.perf_counter()))
    train_lora(config, checkpoint, hooks=hooks)
    return stamps


def run_diffusers(checkpoint: Path, data: Path, size: str, steps: int) -> list[float]:
    """diffusers' train_text_to_image_lora.py loop on the same modules and images."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig

    from brushwork.core.arch import skeleton_config
    from brushwork.loading import load_model
    from brushwork.training.lora_network import NetworkShape, unet_targets

    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    model = load_model(checkpoint, device=accelerator.device, precision="fp32", vae="none")
    unet, vae, text_encoder = model.unet, model.vae, model.text_encoders["text_encoder"]
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    targets = list(unet_targets(unet, NetworkShape(RANK, ALPHA)).plain)
    unet.add_adapter(
        LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=targets)
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    noise_scheduler = DDPMScheduler.from_config(skeleton_config("sd1", "scheduler"))
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    tokenizer = model.tokenizers["text_encoder"]
    files = sorted((data / "1_cat").glob("*.png"))
    stamps = []
    unet.train()
    for step in range(steps):
        path = files[step % len(files)]
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        pixels = torch.from_numpy(array).permute(2, 0, 1)[None].to(accelerator.device)
        caption = path.with_suffix(".txt").read_text(encoding="utf-8")
        ids = tokenizer(
            [caption], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        with accelerator.accumulate(unet):
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (1,), device=latents.device
            )
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            context = text_encoder(ids.to(accelerator.device), return_dict=False)[0]
            prediction = unet(noisy, timesteps, context, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(prediction.float(), noise.float(), reduction="mean")
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        stamps.append(time.perf_counter())
    return stamps


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    checkpoint, data = _prepare_files(work, args.size)
    if args.worker == "prepare":  # its own process: building the model is not a loop's memory
        return
    started = time.perf_counter()
    if args.worker == "brushwork":
        stamps = run_brushwork(checkpoint, data, args.size, args.steps, work / "out")
    else:
        stamps = run_diffusers(checkpoint, data, args.size, args.steps)
    measured = stamps[args.warmup :]
    per_step = (measured[-1] - stamps[args.warmup - 1]) / len(measured) if args.warmup else None
    result = {
        "loop": args.worker,
        "size": args.size,
        "steps_timed": len(measured),
        "seconds_per_step": per_step,
        "first_step_seconds": stamps[0] - started if stamps else None,
        "peak_memory_mib": round(_peak_memory_mib(), 1),
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    print("RESULT " + json.dumps(result), flush=True)


def _run_worker(loop: str, size: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    steps = args.steps or (12 if size == "tiny" else 4)
    command = [
        sys.executable, __file__, "--worker", loop, "--size", size, "--work", str(work),
        "--threads", str(args.threads), "--steps", str(steps), "--warmup", str(args.warmup),
    ]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if loop == "prepare" and done.returncode == 0:
        return {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line.removeprefix("RESULT ")))
    raise SystemExit(f"{loop}/{size} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the SD1.5-size model (256 px)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=0, help="steps per run (default 12 tiny, 4 full)"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "train_lora.json"
    )
    parser.add_argument(
        "--worker", choices=["prepare", "brushwork", "diffusers"], help=argparse.SUPPRESS
    )
    parser.add_argument("--size", choices=list(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for size in ["tiny", *(["full"] if args.full else [])]:
            work = Path(tmp) / size
            work.mkdir()
            _run_worker("prepare", size, args, work)
            for loop in ("diffusers", "brushwork"):
                result = _run_worker(loop, size, args, work)
                print(json.dumps(result))
                runs.append(result)
    report = {
        "benchmark": "LoRA training step: brushwork vs diffusers+peft loop",
        "settings": {"rank": RANK, "alpha": ALPHA, "lr": LR, "batch_size": 1, "images": IMAGES,
                     "resolution": SIZES, "unet_only": True, "vae_encode_every_step": True},
        "device": str(_device()),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "runs": runs,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
