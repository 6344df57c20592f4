"""Load test of `brushwork serve`: many concurrent txt2img clients on the tiny model.

    .venv/bin/python bench/server.py [--clients 32] [--queue-size 16] [--steps 4] [--size 64]

A tiny random-weight SD1 checkpoint in a temporary A1111 root; the server runs in-process
(uvicorn in a thread, one CPU worker, 127.0.0.1, an ephemeral port). Each client posts one
txt2img with its own seed and prompt, and retries after ``Retry-After`` when it gets 503.
Checks: every request answered (200 or 503, never a hang or another status); every image is
the one its client asked for (seed and prompt in the infotext, pixels equal to the same job
drawn in-process). Reports latency (p50/p95/max), throughput (images/s) and the number of 503s,
beside the same jobs run one after another through the generator in one process (the CLI's
path). Results go to bench/results/server.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
import uvicorn
from PIL import Image

from brushwork.core.settings import Settings
from brushwork.generation import GenerationRequest, Generator
from brushwork.jobs import ServiceConfig
from brushwork.library.catalog import Library
from brushwork.loading import load_model
from brushwork.server.app import ServerConfig, create_app
from brushwork.testing.factory import build_components, write_checkpoint_file

RESULTS = Path(__file__).parent / "results" / "server.json"


def _root(workdir: Path) -> Path:
    folder = workdir / "root" / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    write_checkpoint_file(build_components("sd1", seed=0), folder / "tiny.safetensors")
    return workdir / "root"


def _body(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    return {"prompt": f"client {seed}", "seed": seed, "steps": args.steps, "width": args.size,
            "height": args.size, "sampler_name": "Euler", "cfg_scale": 7}  # fmt: skip


def _client(url: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    refusals = 0
    while True:
        reply = requests.post(f"{url}/sdapi/v1/txt2img", json=_body(seed, args), timeout=600)
        if reply.status_code == 503:
            refusals += 1
            time.sleep(float(reply.headers.get("retry-after", "1")) / 5)
            continue
        break
    elapsed = time.perf_counter() - started
    if reply.status_code != 200:
        return {"seed": seed, "status": reply.status_code, "latency_s": elapsed}
    data = reply.json()
    info = json.loads(data["info"])
    image = Image.open(io.BytesIO(base64.b64decode(data["images"][0])))
    return {
        "seed": seed, "status": 200, "latency_s": elapsed, "refusals": refusals,
        "info_seed": info["all_seeds"][0], "info_prompt": info["prompt"],
        "pixels": np.asarray(image.convert("RGB")),
    }  # fmt: skip


def _in_process(root: Path, data: Path, seeds: list[int], args: argparse.Namespace) -> tuple[float, dict[int, np.ndarray]]:  # fmt: skip
    settings = Settings(roots=(root,), data_dir=data, device="cpu", precision="fp32")
    library = Library.open(settings, (root,))
    model = load_model(root / "models/Stable-diffusion/tiny.safetensors", device="cpu",
                       precision="fp32")  # fmt: skip
    generator = Generator(model, library=library)
    images = {}
    started = time.perf_counter()
    for seed in seeds:
        body = _body(seed, args)
        request = GenerationRequest(prompt=body["prompt"], seed=seed, steps=args.steps,
                                    width=args.size, height=args.size, sampler_name="Euler")  # fmt: skip
        images[seed] = np.asarray(generator.generate(request).images[0])
    return time.perf_counter() - started, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(tempfile.mkdtemp(prefix="bench-server-"))
    root = _root(workdir)
    seeds = [1000 + i for i in range(args.clients)]
    serial_s, expected = _in_process(root, workdir / "cli-data", seeds, args)

    settings = Settings(roots=(root,), data_dir=workdir / "data", device="cpu", precision="fp32")
    service = ServiceConfig(settings, roots=(root,), devices=("cpu",), queue_size=args.queue_size)
    app = create_app(ServerConfig(service=service, ui=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    requests.post(f"{url}/sdapi/v1/txt2img", json=_body(1, args), timeout=600)  # warm-up load
    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        replies = list(pool.map(lambda s: _client(url, s, args), seeds))
    wall_s = time.perf_counter() - started
    server.should_exit = True
    thread.join(30)

    ok = [r for r in replies if r["status"] == 200]
    mixed = [
        r["seed"]
        for r in ok
        if r["info_seed"] != r["seed"] or r["info_prompt"] != f"client {r['seed']}"
    ]
    differ = [r["seed"] for r in ok if not np.array_equal(r["pixels"], expected[r["seed"]])]
    latencies = sorted(r["latency_s"] for r in replies)
    report = {
        "clients": args.clients, "queue_size": args.queue_size, "steps": args.steps,
        "size": args.size, "answered": len(replies),
        "statuses": sorted({r["status"] for r in replies}),
        "refusals_503": sum(r.get("refusals", 0) for r in replies),
        "mixed_up": mixed, "pixels_differ": differ,
        "server_wall_s": round(wall_s, 3),
        "server_images_per_s": round(len(ok) / wall_s, 3),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        "latency_max_s": round(latencies[-1], 3),
        "in_process_wall_s": round(serial_s, 3),
        "in_process_images_per_s": round(len(seeds) / serial_s, 3),
        "server_overhead_ratio": round(wall_s / serial_s, 3),
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if mixed or differ or report["statuses"] != [200]:
        sys.exit(1)


if __name__ == "__main__":
    main()
