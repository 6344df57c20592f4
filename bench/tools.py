"""Benchmark of the model tools: a checkpoint merge and a LoRA extraction at SD 1.5 size.

    .venv/bin/python bench/tools.py [--threads N] [--dim 32] [--workdir /tmp/brushwork-bench-tools]

Writes (once; kept in `--workdir` between runs) two random-weight checkpoints of the real SD 1.5
size in fp16 (1,066 M parameters, about 2.1 GB each; seeds 0 and 1), then, each in a fresh
subprocess so that its peak RSS (VmHWM) is its own:

* merge, brushwork: `modeltools.merge.merge_checkpoints` (weighted sum, M = 0.5; tensor by tensor,
  written as computed);
* merge, plain: `safetensors.torch.load_file` both files, compute every tensor in float32, cast to
  fp16, `save_file`: the way most merge scripts do it;
* extract, brushwork: `modeltools.extract.extract_lora` (rank `--dim`, kohya's 192 UNet + 72
  text-encoder layers; the UNet streamed layer by layer; Gram-matrix eigendecomposition);
* extract, plain: both state dicts loaded whole, then per layer the difference and a full
  `torch.linalg.svd` (what kohya's extract_lora_from_models.py does), saved with `save_file`.

The inputs' SHA-256 are computed once beforehand and handed to the brushwork tools (the library
caches them), so both sides do the same work. Times exclude Python imports; the layer list of the
plain extraction is prepared before its clock starts. Each child also fingerprints its output
(a few merged tensors; the norms of a few extracted ΔW) so both sides can be seen to agree.

Figures go to `--output` (default bench/results/tools.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OPERATIONS = ("merge/brushwork", "merge/plain", "extract/brushwork", "extract/plain")
ALPHA = 0.5
MERGE_FINGERPRINT = (
    "model.diffusion_model.input_blocks.1.1.proj_in.weight",
    "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
    "first_stage_model.decoder.conv_out.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
)
EXTRACT_FINGERPRINT = (
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
    "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
)
TE_PREFIX = "cond_stage_model.transformer.text_model."


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM), which belongs to this process image only."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_checkpoint(path: Path, seed: int) -> None:
    import torch

    from brushwork.testing.factory import build_components, write_checkpoint_file

    started = time.perf_counter()
    write_checkpoint_file(
        build_components("sd1", size="full", seed=seed), path, dtype=torch.float16
    )
    took = time.perf_counter() - started
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {took:.0f} s")


# ---------------------------------------------------------------------------------------------
# the four operations (each runs in a child of its own)


def merge_brushwork(work: dict[str, Any], out: Path) -> None:
    from brushwork.modeltools.common import ModelInput
    from brushwork.modeltools.merge import MergeRequest, merge_checkpoints

    a = ModelInput(Path(work["a"]), "a.safetensors", work["sha256"]["a"])
    b = ModelInput(Path(work["b"]), "b.safetensors", work["sha256"]["b"])
    merge_checkpoints(MergeRequest(a, b, out, alpha=ALPHA, overwrite=True))


def merge_plain(work: dict[str, Any], out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    a, b = load_file(work["a"]), load_file(work["b"])
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in a.items():
        if tensor.is_floating_point() and key in b:
            mixed = tensor.float() * (1 - ALPHA) + b[key].float() * ALPHA
            merged[key] = mixed.to(tensor.dtype)
        else:
            merged[key] = tensor
    save_file(merged, out)


def extract_brushwork(work: dict[str, Any], out: Path) -> None:
    from brushwork.modeltools.common import ModelInput
    from brushwork.modeltools.extract import ExtractRequest, extract_lora
    from brushwork.modeltools.lowrank import RankChoice

    tuned = ModelInput(Path(work["b"]), "b.safetensors", work["sha256"]["b"])
    base = ModelInput(Path(work["a"]), "a.safetensors", work["sha256"]["a"])
    request = ExtractRequest(tuned, base, out, RankChoice(work["dim"]), overwrite=True)
    extract_lora(request)


def plain_targets(path: Path) -> list[tuple[str, str]]:
    """(kohya module name, LDM weight key) of kohya's default SD1 layers."""
    from brushwork.formats.checkpoint import read_checkpoint_architecture
    from brushwork.modeltools.extract import unet_ldm_names
    from brushwork.modeltools.targets import text_encoder_targets, unet_targets
    from brushwork.modeltools.tensorsource import TensorSource

    architecture = read_checkpoint_architecture(path)
    names = unet_ldm_names(TensorSource.open(path), architecture)
    pairs = [
        ("lora_unet_" + t.path.replace(".", "_"), names[t.weight_key])
        for t in unet_targets(architecture, with_convs=False)
    ]
    for target in text_encoder_targets(architecture)["text_encoder"]:
        name = "lora_te_text_model_" + target.path.replace(".", "_")
        pairs.append((name, TE_PREFIX + target.weight_key))
    return pairs


def extract_plain(work: dict[str, Any], out: Path, targets: list[tuple[str, str]]) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    base, tuned = load_file(work["a"]), load_file(work["b"])
    dim = work["dim"]
    lora: dict[str, torch.Tensor] = {}
    for name, key in targets:
        delta = tuned[key].float() - base[key].float()
        u, s, vh = torch.linalg.svd(delta.reshape(delta.shape[0], -1), full_matrices=False)
        rank = min(dim, s.numel())
        down = vh[:rank].reshape(rank, *delta.shape[1:])
        up = (u[:, :rank] * s[:rank]).reshape(delta.shape[0], rank, *([1, 1] * (delta.dim() == 4)))
        lora[f"{name}.lora_down.weight"] = down.half().contiguous()
        lora[f"{name}.lora_up.weight"] = up.half().contiguous()
        lora[f"{name}.alpha"] = torch.tensor(float(rank)).half()
    save_file(lora, out, metadata={"ss_network_module": "networks.lora"})


def fingerprint(operation: str, out: Path) -> list[float]:
    import torch
    from safetensors import safe_open

    with safe_open(out, "pt") as handle:
        if operation.startswith("merge"):
            return [float(handle.get_tensor(k).double().sum()) for k in MERGE_FINGERPRINT]
        norms = []
        for name in EXTRACT_FINGERPRINT:
            up = handle.get_tensor(f"{name}.lora_up.weight").float().flatten(1)
            down = handle.get_tensor(f"{name}.lora_down.weight").float().flatten(1)
            norms.append(round(float(torch.linalg.matrix_norm(up @ down)), 4))
        return norms


def child(operation: str, work: dict[str, Any], threads: int) -> dict[str, Any]:
    started = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    workdir = Path(work["workdir"])
    out = workdir / f"{operation.replace('/', '-')}.safetensors"
    targets = plain_targets(Path(work["a"])) if operation == "extract/plain" else []
    imported, rss_before = time.perf_counter(), current_rss_bytes()
    if operation == "merge/brushwork":
        merge_brushwork(work, out)
    elif operation == "merge/plain":
        merge_plain(work, out)
    elif operation == "extract/brushwork":
        extract_brushwork(work, out)
    else:
        extract_plain(work, out, targets)
    done = time.perf_counter()
    peak = peak_rss_bytes()
    return {
        "operation": operation,
        "seconds": round(done - imported, 2),
        "import_s": round(imported - started, 2),
        "rss_before_gb": round(rss_before / 1e9, 3),
        "peak_rss_gb": round(peak / 1e9, 3),
        "output_bytes": out.stat().st_size,
        "torch_threads": torch.get_num_threads(),
        "fingerprint": fingerprint(operation, out),
    }


# ---------------------------------------------------------------------------------------------
# the parent


def run_child(operation: str, work_file: Path, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", operation, str(work_file)]
    done = subprocess.run(
        [*command, "--threads", str(threads)], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {operation:18s} {result['seconds']:8.1f} s   peak RSS {result['peak_rss_gb']:.2f} GB"
        f"   (before {result['rss_before_gb']:.2f} GB)"
    )
    return result


def prepare(workdir: Path, dim: int) -> Path:
    from brushwork.core.hashing import sha256_file

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {name: workdir / f"sd15-size-random-{name}.safetensors" for name in ("a", "b")}
    for seed, (_, path) in enumerate(sorted(paths.items())):
        if not path.is_file():  # in a child of its own, so this process stays small
            subprocess.run([sys.executable, __file__, "--write", str(path), str(seed)], check=True)
    hashes = {name: sha256_file(path) for name, path in paths.items()}
    work = {"workdir": str(workdir), "dim": dim, "sha256": hashes}
    work |= {name: str(path) for name, path in paths.items()}
    work_file = workdir / "work.json"
    work_file.write_text(json.dumps(work), encoding="utf-8")
    return work_file


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "brushwork-bench-tools"
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "tools.json"
    )
    parser.add_argument("--only", choices=OPERATIONS, action="append")
    parser.add_argument("--child", nargs=2, metavar=("OPERATION", "WORK"))
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_checkpoint(Path(args.write[0]), int(args.write[1]))
        return
    if args.child:
        work = json.loads(Path(args.child[1]).read_text(encoding="utf-8"))
        print(json.dumps(child(args.child[0], work, args.threads)))
        return
    work_file = prepare(args.workdir, args.dim)
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = {op: run_child(op, work_file, args.threads) for op in args.only or OPERATIONS}
    report = {
        "inputs": {
            "checkpoints": "2 x SD 1.5 size (1,066 M parameters), random weights, fp16",
            "bytes": Path(json.loads(work_file.read_text())["a"]).stat().st_size,
            "merge": f"weighted sum, M = {ALPHA}, output fp16",
            "extract": f"rank {args.dim}, 192 UNet + 72 text-encoder layers, output fp16",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": args.threads,
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared machine: other processes ran beside the benchmark",
        },
        "results": results,
        "same_merge_output": _same(results, "merge", exact=True),
        "same_extract_output": _same(results, "extract", exact=False),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("same_merge_output", "same_extract_output")}))


def _same(results: dict[str, Any], kind: str, *, exact: bool) -> bool | None:
    ours, plain = results.get(f"{kind}/brushwork"), results.get(f"{kind}/plain")
    if ours is None or plain is None:
        return None
    pairs = zip(ours["fingerprint"], plain["fingerprint"], strict=True)
    if exact:
        return all(a == b for a, b in pairs)
    return all(abs(a - b) <= 1e-3 * max(abs(a), abs(b), 1e-12) for a, b in pairs)


if __name__ == "__main__":
    main()
