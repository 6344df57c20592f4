"""Re-derive the CLIP BPE tokenizer files shipped in brushwork from OpenAI's vocabulary file.

OpenAI's CLIP (MIT licence) ships `bpe_simple_vocab_16e6.txt.gz`; the PyPI packages `openai-clip`
and `open_clip_torch` carry identical copies. This script downloads one of them with pip (no
dependencies, nothing installed), and writes `vocab.json` and `merges.txt` exactly as OpenAI's
SimpleTokenizer builds its encoder: the 256 byte symbols, the same with `</w>`, one entry per merge,
then the two special tokens: 49,408 entries.

    python scripts/derive_clip_tokenizer.py [--out src/brushwork/core/skeletons/tokenizer]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/brushwork/core/skeletons/tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def fetch_bpe_file(work: Path) -> bytes:
    """Download openai-clip's sdist with pip and return the gzipped vocabulary's bytes."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "openai-clip==1.0.1",
            "-d",
            str(work),
        ],
        check=True,
    )
    for archive in work.iterdir():
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                name = next(n for n in zf.namelist() if n.endswith(BPE_NAME))
                return zf.read(name)
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tf:
                member = next(m for m in tf.getmembers() if m.name.endswith(BPE_NAME))
                handle = tf.extractfile(member)
                assert handle is not None
                return handle.read()
    raise SystemExit("no openai-clip archive was downloaded")


def derive(bpe_gz: bytes, out: Path) -> None:
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"derived {len(vocab)} entries, expected {VOCAB_SIZE}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        derive(fetch_bpe_file(Path(tmp)), opts.out)
    print(f"wrote {opts.out / 'vocab.json'} and {opts.out / 'merges.txt'}")


if __name__ == "__main__":
    main()
