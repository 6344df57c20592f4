"""`explain_prompt` reports what generation will do with a prompt."""

from __future__ import annotations

import pytest
import torch

from brushwork.conditioning.explain import explain_prompt
from brushwork.core.kinds import BaseFamily
from brushwork.formats.embedding import Embedding
from brushwork.loading.modules import load_tokenizers


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return load_tokenizers(BaseFamily.SD1, ["text_encoder"])["text_encoder"]


def test_networks_and_parts_and_schedule(tokenizer) -> None:  # type: ignore[no-untyped-def]
    report = explain_prompt(
        "a (red:1.5) [cat:dog:0.5] <lora:style:0.7:0.3> AND sky :0.25",
        negative_prompt="blurry AND ugly",
        steps=10,
        tokenizer=tokenizer,
    )
    assert [(n["name"], n["te"], n["unet"]) for n in report.networks] == [("style", 0.7, 0.3)]
    assert [part.weight for part in report.parts] == [1.0, 0.25]
    first = report.parts[0].schedule
    assert [(s.until_step, s.text.strip()) for s in first] == [
        (5, "a (red:1.5) cat"),
        (10, "a (red:1.5) dog"),
    ]
    assert ("red", 1.5) in first[0].attention
    assert report.negative is not None and report.negative.text == "blurry AND ugly"


def test_long_prompt_is_two_chunks_and_break_closes_a_chunk(tokenizer) -> None:  # type: ignore[no-untyped-def]
    long = ", ".join(["cat"] * 40)  # 79 tokens: more than one 75-token chunk
    report = explain_prompt(long, steps=4, tokenizer=tokenizer)
    assert report.parts[0].schedule[0].chunks == 2
    report = explain_prompt("cat BREAK dog", steps=4, tokenizer=tokenizer)
    text = report.parts[0].schedule[0]
    assert text.chunks == 2 and text.tokens_per_chunk == [1, 1]


def test_embeddings_found_by_name_case_insensitively(tokenizer) -> None:  # type: ignore[no-untyped-def]
    embedding = Embedding(name="one", vectors={"text_encoder": torch.zeros(3, 768)})
    report = explain_prompt(
        "One circle", negative_prompt="one", steps=4, tokenizer=tokenizer, embeddings=[embedding]
    )
    assert report.embeddings_found == ["one"]
    assert report.parts[0].schedule[0].embeddings == ["one"]
    assert report.parts[0].schedule[0].token_count == 4  # 3 vectors + "circle"
