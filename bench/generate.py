"""Benchmark of txt2img: brushwork's generator beside diffusers' `StableDiffusionPipeline`.

    .venv/bin/python bench/generate.py [--images 2] [--threads N]            (CPU)
    .venv/bin/python bench/generate.py --device cuda [--peer-bench]         (GPU)

One random-weight checkpoint of the real SD 1.5 size (fp16 on disk, about 2.1 GB; written once
into `--workdir`, shared with bench/load.py), one prompt, CFG 7, Euler, both sides in one run:

* CPU: 256x256, 10 steps, batch 1. brushwork in its automatic dtype (bf16 on CPUs with native
  bf16, else fp32); diffusers with its defaults (fp32) and with brushwork's dtype.
* `--device cuda`: 512x512, 20 steps, fp16, batch 1. brushwork eager and compiled (`--compile`:
  torch.compile with CUDA graphs), diffusers eager and with its UNet under torch.compile
  (`reduce-overhead`, CUDA graphs). `--peer-bench` also runs ../shared/tools/gpu_peer_bench.py (beside the checkout)
  (diffusers' components alone) in the same session.

Each side runs in a fresh subprocess, so its peak memory is its own (CPU: peak RSS, VmHWM;
GPU: `torch.cuda.max_memory_allocated`). Per side: checkpoint load time, one warm-up image
(1 step; for compiled sides a full image, which includes compilation), then `--images` timed
images: seconds per image end to end (prompt encoding, sampling, VAE decode) and sampler
steps per second the way A1111 reports it/s. The sides run in `--rounds` interleaved rounds
and each keeps its best round. Figures and the ratios (diffusers / brushwork) go to
bench/results/generate.json (generate_cuda.json on a GPU).

CPU figures need a quiet machine: the sides run one after another, and another process on a
2-core VM changes them by tens of percent; the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "a photograph of an astronaut riding a horse, detailed, 35mm"
NEGATIVE = "blurry, low quality"
CFG = 7.0
CPU_CASE = {"size": 256, "steps": 10}
CUDA_CASE = {"size": 512, "steps": 20}
# the steering team's peer script lives in `shared/` beside the checkout
PEER_BENCH = Path(__file__).resolve().parents[2] / "shared" / "tools" / "gpu_peer_bench.py"


def peak_rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_checkpoint(path: Path) -> None:
    import torch

    from brushwork.testing.factory import build_components, write_checkpoint_file

    started = time.perf_counter()
    write_checkpoint_file(build_components("sd1", size="full"), path, dtype=torch.float16)
    print(
        f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s"
    )


def diffusers_config(dest: Path) -> Path:
    """The sd1 skeleton plus the tokenizer: all `from_single_file(config=...)` needs offline."""
    from brushwork.core.arch import skeleton_dir, tokenizer_dir

    if not (dest / "tokenizer").is_dir():
        shutil.copytree(skeleton_dir("sd1"), dest, dirs_exist_ok=True)
        shutil.copytree(tokenizer_dir(), dest / "tokenizer", dirs_exist_ok=True)
    return dest


# -- the sides (each in its own process) ---------------------------------------------------------


class Side:
    """Loads once, then draws images; subclasses fill in how."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        self.spec = spec
        self.torch = torch
        self.device = torch.device(spec["device"])

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def load(self) -> None:
        raise NotImplementedError

    def draw(self, steps: int, seed: int) -> tuple[float, float]:
        """One image; returns (seconds end to end, sampler steps per second)."""
        raise NotImplementedError


class BrushworkSide(Side):
    def load(self) -> None:
        from brushwork.generation import CompileOptions, Generator
        from brushwork.loading import dtype_name, load_model

        model = load_model(
            self.spec["checkpoint"], device=self.device, precision=self.spec["precision"]
        )
        self.dtype = dtype_name(model.dtype)
        options = CompileOptions(enabled=self.spec["compile"])
        self.generator = Generator(model, compile_options=options)

    def draw(self, steps: int, seed: int) -> tuple[float, float]:
        from brushwork.generation import GenerationRequest

        size = self.spec["size"]
        request = GenerationRequest(
            prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size, steps=steps,
            sampler_name="Euler", cfg_scale=CFG, seed=seed,
        )  # fmt: skip
        self.sync()
        started = time.perf_counter()
        result = self.generator.generate(request)
        self.sync()
        return time.perf_counter() - started, result.timings.it_per_s


class DiffusersSide(Side):
    def load(self) -> None:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        dtypes = {
            "fp32": self.torch.float32,
            "bf16": self.torch.bfloat16,
            "fp16": self.torch.float16,
        }
        kwargs: dict[str, Any] = {"config": self.spec["config"], "local_files_only": True}
        if self.spec["precision"] != "default":
            kwargs["torch_dtype"] = dtypes[self.spec["precision"]]
        pipe = StableDiffusionPipeline.from_single_file(self.spec["checkpoint"], **kwargs)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.tokenizer.model_max_length = 77  # the shipped vocab folder does not say it
        pipe.safety_checker = None
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        self.dtype = str(pipe.unet.dtype).removeprefix("torch.")
        if self.spec["compile"]:
            self.pipe.unet = self.torch.compile(self.pipe.unet, mode="reduce-overhead")

    def _run(self, steps: int, seed: int, output_type: str) -> float:
        generator = self.torch.Generator("cpu").manual_seed(seed)
        size = self.spec["size"]
        self.sync()
        started = time.perf_counter()
        with self.torch.inference_mode():
            self.pipe(
                PROMPT, negative_prompt=NEGATIVE, height=size, width=size,
                num_inference_steps=steps, guidance_scale=CFG, generator=generator,
                output_type=output_type,
            )  # fmt: skip
        self.sync()
        return time.perf_counter() - started

    def draw(self, steps: int, seed: int) -> tuple[float, float]:
        seconds = self._run(steps, seed, "pil")
        if steps < 2:
            return seconds, 0.0
        # it/s as A1111 counts it: the sampling loop alone (prompt encoding is a few ms)
        sampling = self._run(steps, seed, "latent")
        return seconds, steps / sampling


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One side, in this fresh process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(spec["threads"])
    side: Side = (BrushworkSide if spec["tool"] == "brushwork" else DiffusersSide)(spec)
    started = time.perf_counter()
    side.load()
    load_s = time.perf_counter() - started
    warm_steps = spec["steps"] if spec["compile"] else 1
    warm_s, _ = side.draw(warm_steps, seed=1)
    images = [side.draw(spec["steps"], seed=100 + i) for i in range(spec["images"])]
    seconds = [s for s, _ in images]
    rates = [r for _, r in images]
    result = {
        "name": spec["name"],
        "dtype": side.dtype,
        "load_s": round(load_s, 3),
        "warmup_s": round(warm_s, 3),
        "s_per_image": round(min(seconds), 3),
        "s_per_image_all": [round(s, 3) for s in seconds],
        "it_per_s": round(max(rates), 3),
        "torch_threads": torch.get_num_threads(),
    }
    if side.device.type == "cuda":
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    result["peak_rss_gb"] = round(peak_rss_bytes() / 1e9, 3)
    return result


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        return {"name": spec["name"], "error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {result['name']:28s} {result['dtype']:8s} load {result['load_s']:6.2f} s, "
        f"{result['s_per_image']:7.2f} s/image, {result['it_per_s']:6.2f} it/s"
    )
    return result


# -- the run ---------------------------------------------------------------------------------


def best_run(side_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the fewest seconds per image (the least disturbed by other processes)."""
    good = [run for run in side_runs if "s_per_image" in run]
    return min(good, key=lambda run: run["s_per_image"]) if good else side_runs[-1]


def brushwork_dtype(device: str) -> str:
    import torch

    from brushwork.loading import choose_dtype, dtype_name

    return dtype_name(choose_dtype(torch.device(device), "auto"))


def sides(device: str, ours: str) -> list[dict[str, Any]]:
    if device == "cuda":
        return [
            {"name": "brushwork eager", "tool": "brushwork", "precision": "fp16", "compile": False},
            {"name": "brushwork --compile", "tool": "brushwork", "precision": "fp16", "compile": True},
            {"name": "diffusers eager", "tool": "diffusers", "precision": "fp16", "compile": False},
            {"name": "diffusers torch.compile", "tool": "diffusers", "precision": "fp16", "compile": True},
        ]  # fmt: skip
    return [
        {"name": "brushwork auto", "tool": "brushwork", "precision": "auto", "compile": False},
        {"name": "diffusers defaults", "tool": "diffusers", "precision": "default", "compile": False},
        {"name": f"diffusers {ours}", "tool": "diffusers", "precision": ours, "compile": False},
    ]  # fmt: skip


def ratios(results: dict[str, dict[str, Any]], device: str) -> dict[str, float]:
    """Seconds per image of each other side divided by brushwork's (above 1: brushwork faster)."""
    base_name = "brushwork --compile" if device == "cuda" else "brushwork auto"
    base = results.get(base_name, {}).get("s_per_image")
    if not base:
        return {}
    return {
        f"{name} / {base_name}": round(result["s_per_image"] / base, 3)
        for name, result in results.items()
        if name != base_name and result.get("s_per_image")
    }


def peer_bench(out: Path) -> dict[str, Any] | None:
    if not PEER_BENCH.is_file():
        return None
    folder = out.parent / "peer"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(PEER_BENCH), str(folder)], check=False)
    report = folder / "gpu_bench.json"
    return json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=1, help="timed images per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all sides, interleaved")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peer-bench", action="store_true", help="also run gpu_peer_bench.py")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "brushwork-bench-load"
    )
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.images < 1:
        parser.error("--rounds and --images must be at least 1")
    if args.write:
        write_checkpoint(args.write)
        return
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    results_dir = Path(__file__).parent / "results"
    output = args.output or results_dir / (
        "generate_cuda.json" if args.device == "cuda" else "generate.json"
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.workdir / "sd15-size-random-fp16.safetensors"
    if not checkpoint.is_file():
        subprocess.run([sys.executable, __file__, "--write", str(checkpoint)], check=True)
    config = diffusers_config(args.workdir / "sd1-config")
    case = CUDA_CASE if args.device == "cuda" else CPU_CASE
    ours = brushwork_dtype(args.device)
    common = {
        "checkpoint": str(checkpoint), "config": str(config), "device": args.device,
        "threads": args.threads, "images": args.images, **case,
    }  # fmt: skip
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"{args.device}: {case['size']}x{case['size']}, {case['steps']} Euler steps, CFG {CFG}")
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_index in range(args.rounds):  # interleaved, so every side sees the same machine
        print(f"round {round_index + 1}/{args.rounds}")
        for spec in sides(args.device, ours):
            runs.setdefault(spec["name"], []).append(run_child(common | spec))
    results = {name: best_run(side_runs) for name, side_runs in runs.items()}
    report = {
        "case": {**case, "sampler": "Euler", "cfg": CFG, "batch": 1, "device": args.device},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": args.threads,
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "note": "CPU figures need a quiet machine; other processes may have run beside",
        },
        "brushwork_dtype": ours,
        "results": results,
        "ratio_s_per_image": ratios(results, args.device),
        "runs": runs,
    }
    if args.device == "cuda" and args.peer_bench:
        report["peer_bench"] = peer_bench(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report["ratio_s_per_image"], indent=2))


if __name__ == "__main__":
    main()
