"""Benchmark of the model library: scan + identify, hashing throughput, and the index cache.

    .venv/bin/python bench/library.py [--files 1000] [--hash-mib 1024] [--output PATH]

1. Writes `--files` tiny model files (safetensors LoRA, checkpoints and embeddings; pickled
   .ckpt checkpoints and .pt embeddings) into an A1111 layout in a temp folder, then scans and
   identifies them cold (empty index) and warm (same index, nothing changed).
2. Hashes every file cold, then rescans and rehashes the unchanged library, counting how many
   times a file is identified or hashed the second time (must be 0).
3. Hashes one `--hash-mib` file with `core.hashing.sha256_file` and with `sha256sum`
   (subprocess), each the best of `--repeats` runs on a warm page cache; prints the speed ratio
   (target >= 0.9).

Figures go to `--output` (default bench/results/library.json). Everything runs in one thread
(the library scans and hashes sequentially; torch is set to one thread too).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from brushwork.core import hashing
from brushwork.core.settings import Settings
from brushwork.library import catalog
from brushwork.library.catalog import Library

LORA_MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


def _templates() -> dict[str, tuple[str, bytes]]:
    """name -> (relative folder, file bytes) for each kind of tiny file."""
    lora = {
        f"{LORA_MODULE}.lora_down.weight": torch.randn(4, 768),
        f"{LORA_MODULE}.lora_up.weight": torch.randn(320, 4),
        f"{LORA_MODULE}.alpha": torch.tensor(4.0),
    }
    checkpoint = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
        "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (
            torch.randn(16, 768)
        ),
    }
    embedding = {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 768)}}

    def pickled(obj: Any) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    return {
        "lora.safetensors": ("models/Lora", safetensors_bytes(lora, {"ss_output_name": "x"})),
        "model.safetensors": ("models/Stable-diffusion", safetensors_bytes(checkpoint)),
        "model.ckpt": ("models/Stable-diffusion", pickled({"state_dict": checkpoint})),
        "emb.safetensors": ("embeddings", safetensors_bytes({"emb_params": torch.randn(2, 768)})),
        "emb.pt": ("embeddings", pickled(embedding)),
    }


def write_library(root: Path, count: int) -> Counter[str]:
    templates = list(_templates().items())
    kinds: Counter[str] = Counter()
    for index in range(count):
        name, (folder, data) = templates[index % len(templates)]
        stem, extension = name.split(".", 1)
        target = root / folder / f"sub{index % 10}" / f"{stem}-{index}.{extension}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        kinds[name] += 1
    return kinds


def _count_calls(counts: Counter[str]) -> None:
    """Count identifications and hashes (patched module attributes, as the tests do)."""

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        return counted

    catalog.identify_file = wrap("identify", catalog.identify_file)  # type: ignore[assignment]
    hashing.sha256_file = wrap("sha256", hashing.sha256_file)  # type: ignore[assignment]
    hashing.addnet_hash_file = wrap("addnet", hashing.addnet_hash_file)  # type: ignore[assignment]


def bench_scan(root: Path, data_dir: Path, counts: Counter[str]) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir)
    figures: dict[str, Any] = {}
    for label in ("cold", "warm"):
        counts.clear()
        start = time.perf_counter()
        with Library.open(settings, [root]) as library:
            scan = library.scan()
        seconds = time.perf_counter() - start
        invalid = sum(1 for e in scan.entries if e.kind is None)
        figures[f"scan_{label}_s"] = round(seconds, 4)
        figures[f"scan_{label}_files_per_s"] = round(len(scan.entries) / seconds, 1)
        figures[f"scan_{label}_identified"] = counts["identify"]
        figures[f"scan_{label}_invalid"] = invalid
    figures["files"] = len(scan.entries)
    figures["warm_speedup"] = round(figures["scan_cold_s"] / figures["scan_warm_s"], 1)
    for label in ("cold", "warm"):
        counts.clear()
        start = time.perf_counter()
        with Library.open(settings, [root]) as library:
            library.hash_entries(library.scan().entries)
        figures[f"rescan_and_hash_{label}_s"] = round(time.perf_counter() - start, 4)
        figures[f"rescan_and_hash_{label}_hashes"] = counts["sha256"] + counts["addnet"]
        figures[f"rescan_and_hash_{label}_identified"] = counts["identify"]
    return figures


def _write_random(path: Path, mebibytes: int) -> None:
    block = os.urandom(2**20)
    with path.open("wb") as handle:
        for index in range(mebibytes):
            handle.write(block[index % 256 :] + block[: index % 256])  # not one repeated block


def _best(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_hash(folder: Path, mebibytes: int, repeats: int) -> dict[str, Any]:
    path = folder / "big.bin"
    _write_random(path, mebibytes)
    tool = shutil.which("sha256sum")
    if tool is None:
        raise SystemExit("sha256sum is not installed; it is the reference for the hash bench")

    def reference() -> str:
        output = subprocess.run([tool, str(path)], check=True, capture_output=True, text=True)
        return output.stdout.split()[0]

    ours_digest, theirs_digest = hashing.sha256_file(path), reference()  # also warms the cache
    if ours_digest != theirs_digest:
        raise SystemExit(f"hash mismatch: {ours_digest} != sha256sum {theirs_digest}")
    ours = _best(repeats, lambda: hashing.sha256_file(path))
    theirs = _best(repeats, reference)
    path.unlink()
    return {
        "hash_file_mib": mebibytes,
        "hash_repeats": repeats,
        "brushwork_sha256_s": round(ours, 4),
        "sha256sum_s": round(theirs, 4),
        "brushwork_mib_per_s": round(mebibytes / ours, 1),
        "sha256sum_mib_per_s": round(mebibytes / theirs, 1),
        "speed_ratio_vs_sha256sum": round(theirs / ours, 3),
        "target_ratio": 0.9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--hash-mib", type=int, default=1024, help="size of the hashed file, MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results/library.json"))
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    counts: Counter[str] = Counter()
    _count_calls(counts)
    with tempfile.TemporaryDirectory(prefix="brushwork-bench-") as temp:
        work = Path(temp)
        start = time.perf_counter()
        kinds = write_library(work / "webui", options.files)
        generate_s = time.perf_counter() - start
        scan = bench_scan(work / "webui", work / "data", counts)
        hashed = bench_hash(work, options.hash_mib, options.repeats)
    results = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": 1,
            "torch_threads": torch.get_num_threads(),
        },
        "library_files_by_template": dict(kinds),
        "generate_s": round(generate_s, 3),
        **scan,
        **hashed,
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"threads: 1 (library scan and hashing are sequential); cpus: {os.cpu_count()}")
    print(
        f"scan+identify {scan['files']} files: cold {scan['scan_cold_s']:.3f} s "
        f"({scan['scan_cold_identified']} identified), warm {scan['scan_warm_s']:.3f} s "
        f"({scan['scan_warm_identified']} identified): warm is {scan['warm_speedup']}x faster"
    )
    print(
        f"rescan + hash of the unchanged library: {scan['rescan_and_hash_warm_hashes']} hashes "
        f"(first time: {scan['rescan_and_hash_cold_hashes']})"
    )
    print(
        f"sha256 of {options.hash_mib} MiB: brushwork {hashed['brushwork_mib_per_s']} MiB/s, "
        f"sha256sum {hashed['sha256sum_mib_per_s']} MiB/s, "
        f"ratio {hashed['speed_ratio_vs_sha256sum']} (target >= 0.9)"
    )
    print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
