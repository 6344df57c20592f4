"""Benchmark of checkpoint loading: brushwork's `load_model` against diffusers' `from_single_file`.

    .venv/bin/python bench/load.py [--repeats 2] [--threads N] [--workdir /tmp/brushwork-bench-load]

Writes (once; kept in `--workdir` between runs) a random-weight checkpoint of the real SD 1.5 size
in fp16 (1,066 M parameters, about 2.1 GB, the size of a pruned fp16 SD1.5 file), then loads it
onto the CPU in fp32 and in bf16 with

* brushwork: `loading.load_model(path, device="cpu", precision=...)` (UNet, VAE, text encoder,
  tokenizer, schedule facts);
* diffusers: `StableDiffusionPipeline.from_single_file(path, config=<skeleton folder + tokenizer>,
  torch_dtype=...)` (the same modules plus a scheduler), offline.

Each load runs in a fresh subprocess, so that its peak RSS (VmHWM) is honest; the
load time excludes the Python imports (reported apart). The best of `--repeats` runs is kept, the
runs of both loaders interleaved so both see the same page cache and machine load. Each child
also fingerprints a few UNet weights so the two loaders can be seen to load the same numbers.

Figures go to `--output` (default bench/results/load.json).
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

LOADERS = ("brushwork", "diffusers")
PRECISIONS = ("fp32", "bf16")
FINGERPRINT = ("conv_in.weight", "down_blocks.0.attentions.0.proj_in.weight", "conv_out.weight")


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM, which belongs to the process image. (`ru_maxrss` would
    carry over the parent's peak through fork + exec.)"""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def current_rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_checkpoint(path: Path) -> None:
    import torch

    from brushwork.testing.factory import build_components, write_checkpoint_file

    started = time.perf_counter()
    components = build_components("sd1", size="full")
    write_checkpoint_file(components, path, dtype=torch.float16)
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


def child(loader: str, precision: str, path: Path, config: Path, threads: int) -> dict[str, Any]:
    """One load in this (fresh) process; returns its figures."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()
    import torch
    from diffusers import StableDiffusionPipeline

    from brushwork.loading import load_model

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    imported, rss_before = time.perf_counter(), current_rss_bytes()
    if loader == "brushwork":
        unet = load_model(path, device="cpu", precision=precision).unet
    else:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), torch_dtype=dtype, local_files_only=True
        )
        unet = pipe.unet
    loaded = time.perf_counter()
    weights = unet.state_dict()
    return {
        "loader": loader,
        "precision": precision,
        "load_s": round(loaded - imported, 3),
        "import_s": round(imported - started, 3),
        "rss_before_load_gb": round(rss_before / 1e9, 3),
        "peak_rss_gb": round(peak_rss_bytes() / 1e9, 3),
        "unet_dtype": str(next(unet.parameters()).dtype),
        "fingerprint": [float(weights[k].double().sum()) for k in FINGERPRINT],
        "torch_threads": torch.get_num_threads(),
    }


def run_child(
    loader: str, precision: str, path: Path, config: Path, threads: int
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", loader, precision, str(path), str(config)]
    command += ["--threads", str(threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {loader:9s} {precision}: {result['load_s']:6.2f} s, peak RSS "
        f"{result['peak_rss_gb']:.2f} GB (before load {result['rss_before_load_gb']:.2f} GB)"
    )
    return result


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "brushwork-bench-load"
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "load.json"
    )
    parser.add_argument("--child", nargs=4, metavar=("LOADER", "PRECISION", "PATH", "CONFIG"))
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_checkpoint(args.write)
        return
    if args.child:
        loader, precision, path, config = args.child
        print(json.dumps(child(loader, precision, Path(path), Path(config), args.threads)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / "sd15-size-random-fp16.safetensors"
    if not path.is_file():  # in a child of its own, so this process stays small
        subprocess.run([sys.executable, __file__, "--write", str(path)], check=True)
    config = diffusers_config(args.workdir / "sd1-config")
    load_before = load_average()
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        print(f"round {repeat + 1}/{args.repeats}")
        for precision in PRECISIONS:
            for loader in LOADERS:
                runs.append(run_child(loader, precision, path, config, args.threads))
    best = {
        f"{loader}/{precision}": min(
            (r for r in runs if (r["loader"], r["precision"]) == (loader, precision)),
            key=lambda r: r["load_s"],
        )
        for precision in PRECISIONS
        for loader in LOADERS
    }
    same = all(
        best[f"brushwork/{p}"]["fingerprint"] == best[f"diffusers/{p}"]["fingerprint"]
        for p in PRECISIONS
    )
    report = {
        "checkpoint": {"path": str(path), "bytes": path.stat().st_size, "dtype": "fp16"},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": args.threads,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "note": "shared machine: other processes ran beside the benchmark",
        },
        "best": best,
        "same_unet_weights": same,
        "speedup_vs_diffusers": {
            p: round(best[f"diffusers/{p}"]["load_s"] / best[f"brushwork/{p}"]["load_s"], 2)
            for p in PRECISIONS
        },
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {k: report[k] for k in ("best", "same_unet_weights", "speedup_vs_diffusers")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
