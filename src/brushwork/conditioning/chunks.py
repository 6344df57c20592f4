"""Prompt text -> 77-token chunks with per-token weights and embedding placements.

The rules are A1111's (v1.10, `sd_hijack_clip.py` `tokenize_line`), restated:

* The text is split into weighted runs by `prompt.parse_attention` (emphasis "None": one run of
  weight 1.0, brackets and ``BREAK`` literal). Each run is tokenized on its own, without BOS/EOS.
* Tokens fill chunks of 75. A full chunk is closed when the next token arrives; it gets BOS in
  front and EOS behind (77 ids). A chunk closed early is padded with EOS up to 75 first. BOS, EOS
  and padding weigh 1.0; every other token carries its run's weight.
* Comma backtrack: when the chunk is full, the arriving token is not a comma, and the chunk's last
  comma is at most `comma_backtrack` tokens from its end, the tokens after that comma move to the
  next chunk. (A comma that arrives at a full chunk starts the next one and does not count.)
* ``BREAK`` closes the current chunk (even an empty one, giving a chunk of padding).
* A textual-inversion trigger (matched on token ids, longest first) puts one placeholder id 0 per
  vector, carrying the run's weight; when the vectors would not fit in what is left of the
  chunk, the chunk is closed first, so an embedding never straddles two chunks.
* The last chunk is closed at the end, and an empty prompt still gives one chunk.
* `token_count` is A1111's: 75 per chunk closed before the end, plus the last chunk's tokens.

One deliberate difference: when the comma backtrack moves tokens that hold an embedding's
placeholders, A1111 leaves the embedding's vectors behind in the old chunk (writing them over
its padding, and leaving the moved placeholders as the token "!"); here the placement moves with
its placeholders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from brushwork.formats.embedding import Embedding

CHUNK_LENGTH = 75  # prompt tokens per chunk; BOS and EOS make 77
DEFAULT_COMMA_BACKTRACK = 20  # A1111's `comma_padding_backtrack`
EMBEDDING_PLACEHOLDER_ID = 0  # the id A1111 puts where embedding vectors go
BREAK_MARKER = ("BREAK", -1.0)  # what `parse_attention` makes of a BREAK in plain text

Tokenize = Callable[[list[str]], list[list[int]]]
FindEmbedding = Callable[[Sequence[int], int], "tuple[Embedding, int] | None"]


@dataclass(frozen=True)
class SpecialTokens:
    """The ids that frame a chunk, and the comma the backtrack looks for."""

    bos: int
    eos: int
    comma: int | None


@dataclass(frozen=True, eq=False)
class EmbeddingPlacement:
    """An embedding's vectors go to rows `position ... position + num_vectors - 1` of a chunk
    (positions count in the 77-token window: BOS is 0)."""

    position: int
    embedding: Embedding


@dataclass(frozen=True, eq=False)
class PromptChunk:
    """One 77-token window: ids (EOS-padded), a weight per id, and where embeddings go."""

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]
    embeddings: tuple[EmbeddingPlacement, ...] = ()


@dataclass(frozen=True, eq=False)
class TokenizedPrompt:
    """A prompt's chunks, and A1111's token count (what the UI counter shows)."""

    chunks: tuple[PromptChunk, ...]
    token_count: int


class _ChunkBuilder:
    """The chunk being filled, and the chunks closed so far."""

    def __init__(self, special: SpecialTokens, comma_backtrack: int) -> None:
        self.special = special
        self.comma_backtrack = comma_backtrack
        self.chunks: list[PromptChunk] = []
        self.tokens: list[int] = []
        self.weights: list[float] = []
        self.placements: list[tuple[int, Embedding]] = []  # (index in self.tokens, embedding)
        self.last_comma = -1
        self.token_count = 0

    def close(self, *, is_last: bool = False) -> None:
        self.token_count += len(self.tokens) if is_last else CHUNK_LENGTH
        padding = CHUNK_LENGTH - len(self.tokens)
        tokens = [self.special.bos, *self.tokens, *[self.special.eos] * padding, self.special.eos]
        weights = [1.0, *self.weights, *[1.0] * padding, 1.0]
        placements = tuple(EmbeddingPlacement(index + 1, emb) for index, emb in self.placements)
        self.chunks.append(PromptChunk(tuple(tokens), tuple(weights), placements))
        self.tokens, self.weights, self.placements = [], [], []
        self.last_comma = -1

    def backtrack_to_last_comma(self) -> None:
        """Close the chunk after its last comma; what followed the comma starts the next one."""
        cut = self.last_comma + 1
        moved_tokens, moved_weights = self.tokens[cut:], self.weights[cut:]
        moved = [(index - cut, emb) for index, emb in self.placements if index >= cut]
        self.tokens, self.weights = self.tokens[:cut], self.weights[:cut]
        self.placements = [(index, emb) for index, emb in self.placements if index < cut]
        self.close()
        self.tokens, self.weights, self.placements = moved_tokens, moved_weights, moved

    def before_token(self, token: int) -> None:
        """What happens when a token arrives: comma bookkeeping, backtrack, closing a full chunk."""
        full = len(self.tokens) == CHUNK_LENGTH
        if token == self.special.comma:
            self.last_comma = len(self.tokens)
        elif (
            full
            and self.comma_backtrack > 0
            and self.last_comma != -1
            and CHUNK_LENGTH - self.last_comma <= self.comma_backtrack
        ):
            self.backtrack_to_last_comma()
        if len(self.tokens) == CHUNK_LENGTH:
            self.close()

    def add_embedding(self, embedding: Embedding, weight: float) -> None:
        count = embedding.num_vectors
        if len(self.tokens) + count > CHUNK_LENGTH:
            self.close()
        self.placements.append((len(self.tokens), embedding))
        self.tokens.extend([EMBEDDING_PLACEHOLDER_ID] * count)
        self.weights.extend([weight] * count)


def chunk_prompt(
    runs: Sequence[tuple[str, float]],
    tokenize: Tokenize,
    special: SpecialTokens,
    *,
    find_embedding: FindEmbedding | None = None,
    comma_backtrack: int = DEFAULT_COMMA_BACKTRACK,
) -> TokenizedPrompt:
    """Chunks of weighted runs (as `parse_attention` gives them), by the rules above."""
    builder = _ChunkBuilder(special, comma_backtrack)
    for ids, (text, weight) in zip(tokenize([text for text, _ in runs]), runs, strict=True):
        if (text, weight) == BREAK_MARKER:
            builder.close()
            continue
        position = 0
        while position < len(ids):
            builder.before_token(ids[position])
            found = find_embedding(ids, position) if find_embedding else None
            if found is None:
                builder.tokens.append(ids[position])
                builder.weights.append(weight)
                position += 1
                continue
            embedding, matched = found
            builder.add_embedding(embedding, weight)
            position += matched
    if builder.tokens or not builder.chunks:
        builder.close(is_last=True)
    return TokenizedPrompt(tuple(builder.chunks), builder.token_count)
