"""Benchmark of the prompt language: parse time against input size, for every function.

Run: ``.venv/bin/python bench/prompt.py`` (a minute or so on 2 cores). Prints a table and writes
``bench/results/prompt.json``.

The peer is A1111's ``modules/prompt_parser.py`` (a lark Earley grammar for prompt editing, a
regex loop for attention), which is not installed here: AGPL code stays out of this repository.
Its published cost (reference notes, reliability.md section 5.3, lark 1.3.1): 0.08 s for a
390-character prompt, 5.0 s for 720 characters of ``(a:1.1) [b:c:0.5] ``, 333 s for 2,000 nested
parentheses. Ours is linear: the target is well under a second at 100,000 characters.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from brushwork.prompt import (
    extract_networks,
    format_infotext,
    parse_attention,
    parse_infotext,
    prompt_schedule,
    split_and,
)

SIZES = (1_000, 10_000, 100_000)
RESULTS = Path(__file__).parent / "results" / "prompt.json"


def nested(open_: str, middle: str, close: str, size: int) -> str:
    depth = max(1, (size - len(middle)) // (len(open_) + len(close)))
    return open_ * depth + middle + close * depth


def repeated(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def infotext_of(size: int) -> str:
    params = {
        "Steps": 20,
        "Sampler": "DPM++ 2M Karras",
        "CFG scale": 7,
        "Seed": 1,
        "Size": "512x768",
    }
    prompt = repeated("(a:1.1) [b:c:0.5], ", size // 2)
    return format_infotext(prompt, repeated("blurry, ", size // 2), params)


# name -> (what it feeds, function of the text)
SHAPES: dict[str, Callable[[int], str]] = {
    "nested ( )": lambda n: nested("(", "a", ")", n),
    "nested [ ]": lambda n: nested("[", "a", "]", n),
    "nested [a: :3]": lambda n: nested("[a:", "b", ":3]", n),
    "nested [a| ]": lambda n: nested("[a|", "b", "]", n),
    "unclosed (a": lambda n: repeated("(a", n),
    "(a:1.1) [b:c:0.5]": lambda n: repeated("(a:1.1) [b:c:0.5] ", n),
}
FUNCTIONS: dict[str, tuple[Callable[[str], object], tuple[str, ...]]] = {
    "prompt_schedule(steps=20)": (lambda text: prompt_schedule(text, 20), tuple(SHAPES)),
    "parse_attention": (parse_attention, tuple(SHAPES)),
    "split_and": (split_and, ("a AND b:0.5", "nested ( )")),
    "extract_networks": (extract_networks, ("<lora:x:0.5> text", "<a: without >")),
    "parse_infotext": (parse_infotext, ("infotext",)),
}
EXTRA_SHAPES: dict[str, Callable[[int], str]] = {
    "a AND b:0.5": lambda n: repeated("a AND b:0.5 ", n),
    "<lora:x:0.5> text": lambda n: repeated("<lora:x:0.5> text ", n),
    "<a: without >": lambda n: repeated("<a:", n),
    "infotext": infotext_of,
}


def best_time(function: Callable[[str], object], text: str, budget: float = 1.0) -> float:
    best = float("inf")
    spent = 0.0
    runs = 0
    while runs < 3 or (spent < budget and runs < 50):
        start = time.perf_counter()
        function(text)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
        runs += 1
    return best


def main() -> int:
    shapes = {**SHAPES, **EXTRA_SHAPES}
    rows = []
    print(f"{'function':28} {'input':22} " + " ".join(f"{n:>10}" for n in SIZES))
    for name, (function, shape_names) in FUNCTIONS.items():
        for shape in shape_names:
            timings = {}
            for size in SIZES:
                text = shapes[shape](size)
                timings[str(size)] = {"chars": len(text), "seconds": best_time(function, text)}
            rows.append({"function": name, "input": shape, "timings": timings})
            cells = " ".join(f"{timings[str(n)]['seconds'] * 1000:8.2f}ms" for n in SIZES)
            print(f"{name:28} {shape:22} {cells}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "brushwork.prompt parse time (best of several runs)",
        "peer": "A1111 modules/prompt_parser.py (lark Earley): not installed, see module docstring",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "results": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    worst = max(t["seconds"] for row in rows for t in row["timings"].values())
    print(f"slowest single parse: {worst:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
