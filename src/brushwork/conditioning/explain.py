"""What a prompt means, step by step, without a model: the answer to "why is my prompt 2 chunks?".

Runs the same pieces generation runs (extra-network extraction, AND split, prompt editing
schedule, attention parsing, 75-token chunking with embeddings matched by name) and reports each
stage as plain data, so the CLI and the HTTP API can show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import CLIPTokenizer

from brushwork.conditioning.chunks import SpecialTokens, TokenizedPrompt, chunk_prompt
from brushwork.conditioning.embeddings import EmbeddingMatcher
from brushwork.formats.embedding import Embedding
from brushwork.prompt import extract_networks, parse_attention, prompt_schedule, split_and

_COMMA = ",</w>"


@dataclass(frozen=True)
class TextExplanation:
    """One scheduled text: its emphasis runs and its chunks."""

    text: str
    until_step: int
    attention: list[tuple[str, float]]
    chunks: int
    token_count: int
    tokens_per_chunk: list[int]
    embeddings: list[str]


@dataclass(frozen=True)
class PartExplanation:
    """One AND part (the negative prompt is a single part)."""

    text: str
    weight: float
    schedule: list[TextExplanation]


@dataclass(frozen=True)
class PromptExplanation:
    prompt: str
    networks: list[dict[str, Any]]
    parts: list[PartExplanation]
    negative: PartExplanation | None = None
    embeddings_found: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Chunker:
    def __init__(self, tokenizer: CLIPTokenizer, embeddings: Iterable[Embedding]) -> None:
        self._tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self._special = SpecialTokens(
            int(tokenizer.bos_token_id), int(tokenizer.eos_token_id), vocab.get(_COMMA)
        )
        self._matcher = EmbeddingMatcher(embeddings, self._tokenize)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        result = self._tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)
        return [list(ids) for ids in result["input_ids"]]

    def __call__(self, runs: Sequence[tuple[str, float]]) -> TokenizedPrompt:
        return chunk_prompt(runs, self._tokenize, self._special, find_embedding=self._matcher)


def _explain_text(chunker: _Chunker, text: str, until_step: int) -> TextExplanation:
    runs = parse_attention(text)
    tokenized = chunker(runs)
    names = [
        placement.embedding.name for chunk in tokenized.chunks for placement in chunk.embeddings
    ]
    return TextExplanation(
        text=text,
        until_step=until_step,
        attention=[(run_text, float(weight)) for run_text, weight in runs],
        chunks=len(tokenized.chunks),
        token_count=tokenized.token_count,
        tokens_per_chunk=[
            sum(1 for t in chunk.tokens[1:-1] if t != chunker._special.eos)
            for chunk in tokenized.chunks
        ],
        embeddings=names,
    )


def _explain_part(
    chunker: _Chunker, text: str, weight: float, steps: int, hires_steps: int | None
) -> PartExplanation:
    schedule = prompt_schedule(text, steps, hires_steps)
    return PartExplanation(
        text=text,
        weight=weight,
        schedule=[_explain_text(chunker, scheduled, end) for end, scheduled in schedule],
    )


def explain_prompt(
    prompt: str,
    *,
    negative_prompt: str = "",
    steps: int = 20,
    hires_steps: int | None = None,
    tokenizer: CLIPTokenizer,
    embeddings: Iterable[Embedding] = (),
) -> PromptExplanation:
    """Explain a prompt (and negative prompt) the way generation will read it."""
    chunker = _Chunker(tokenizer, embeddings)
    stripped, refs = extract_networks(prompt)
    parts = [
        _explain_part(chunker, text, weight, steps, hires_steps)
        for text, weight in split_and(stripped)
    ]
    negative_stripped, negative_refs = extract_networks(negative_prompt)
    negative = _explain_part(chunker, negative_stripped, 1.0, steps, hires_steps)
    found = sorted(
        {name for part in [*parts, negative] for text in part.schedule for name in text.embeddings}
    )
    networks = [
        {
            "kind": ref.kind,
            "name": ref.name,
            "te": ref.te,
            "unet": ref.unet,
            "dyn": ref.dyn,
            "text": ref.text,
            "problems": list(ref.problems),
        }
        for ref in [*refs, *negative_refs]
    ]
    return PromptExplanation(prompt, networks, parts, negative, found)
