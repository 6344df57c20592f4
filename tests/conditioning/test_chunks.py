"""75-token chunks: exact token layout, comma backtrack, BREAK, weights and embedding placement."""

from __future__ import annotations

import pytest

from brushwork.conditioning import EmbeddingDatabase, PromptEncoder
from brushwork.core.errors import ConfigError
from brushwork.loading import LoadedModel

from .conftest import BOS, EOS, SD_WIDTHS, embedding, token_id, window


@pytest.fixture(scope="module")
def encoder(sd1: LoadedModel) -> PromptEncoder:
    return PromptEncoder(sd1)


@pytest.fixture(scope="module")
def cat(sd1: LoadedModel) -> int:
    return token_id(sd1, "cat")


@pytest.fixture(scope="module")
def comma(sd1: LoadedModel) -> int:
    return token_id(sd1, ",")


def words(count: int, word: str = "cat") -> str:
    return " ".join([word] * count)


@pytest.mark.parametrize(
    ("count", "layout", "token_count"),
    [
        (1, [[1]], 1),
        (75, [[75]], 75),
        (76, [[75], [1]], 76),
        (150, [[75], [75]], 150),
    ],
)
def test_chunk_layout_for_prompt_lengths(
    encoder: PromptEncoder, cat: int, count: int, layout: list[list[int]], token_count: int
) -> None:
    prompt = encoder.tokenize(words(count))

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [window([cat] * n) for [n] in layout]
    assert all(chunk.multipliers == (1.0,) * 77 for chunk in prompt.chunks)
    assert prompt.token_count == token_count


def test_empty_prompt_is_one_chunk_of_padding(encoder: PromptEncoder) -> None:
    prompt = encoder.tokenize("")

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [[BOS] + [EOS] * 76]
    assert prompt.token_count == 0


def test_comma_backtrack_moves_the_words_after_the_last_comma(
    encoder: PromptEncoder, cat: int, comma: int
) -> None:
    # 70 words, a comma, then 10 words: the chunk fills after 4 of them (comma at index 70,
    # 5 from the end, within 20), so those 4 move on with the other 6.
    prompt = encoder.tokenize(words(70) + ", " + words(10, "dog"))
    dog = token_id(encoder.model, "dog")

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [
        window([cat] * 70 + [comma]),
        window([dog] * 10),
    ]
    assert prompt.token_count == 85


def test_comma_further_back_than_20_tokens_does_not_move_anything(
    encoder: PromptEncoder, cat: int, comma: int
) -> None:
    prompt = encoder.tokenize(words(50) + ", " + words(30))

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [
        window([cat] * 50 + [comma] + [cat] * 24),
        window([cat] * 6),
    ]


def test_comma_backtrack_zero_turns_it_off(sd1: LoadedModel, cat: int, comma: int) -> None:
    prompt = PromptEncoder(sd1, comma_backtrack=0).tokenize(words(70) + ", " + words(10))

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [
        window([cat] * 70 + [comma] + [cat] * 4),
        window([cat] * 6),
    ]


def test_comma_arriving_at_a_full_chunk_starts_the_next(
    encoder: PromptEncoder, cat: int, comma: int
) -> None:
    prompt = encoder.tokenize(words(75) + ", cat")

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [
        window([cat] * 75),
        window([comma, cat]),
    ]


def test_break_pads_the_current_chunk(encoder: PromptEncoder, cat: int) -> None:
    dog = token_id(encoder.model, "dog")
    prompt = encoder.tokenize("cat BREAK dog")

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [window([cat]), window([dog])]
    assert prompt.token_count == 76  # A1111 counts a chunk closed by BREAK as 75


def test_break_at_the_start_gives_a_chunk_of_padding(encoder: PromptEncoder, cat: int) -> None:
    prompt = encoder.tokenize("BREAK cat")

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [window([]), window([cat])]


def test_break_inside_brackets_is_the_word(encoder: PromptEncoder, cat: int) -> None:
    prompt = encoder.tokenize("cat (BREAK) cat")
    word = token_id(encoder.model, "break")

    assert [list(chunk.tokens) for chunk in prompt.chunks] == [window([cat, word, cat])]
    # as in A1111: the marker's weight -1 is multiplied by the bracket, and the word keeps it
    assert prompt.chunks[0].multipliers[1:4] == (1.0, -1.1, 1.0)


def test_weights_follow_their_tokens(encoder: PromptEncoder, cat: int) -> None:
    dog = token_id(encoder.model, "dog")
    prompt = encoder.tokenize("(cat:1.5) dog [cat]")

    (chunk,) = prompt.chunks
    assert list(chunk.tokens) == window([cat, dog, cat])
    assert chunk.multipliers[:5] == (1.0, 1.5, 1.0, 1 / 1.1, 1.0)
    assert set(chunk.multipliers[4:]) == {1.0}


def test_emphasis_none_keeps_brackets_as_text(sd1: LoadedModel, cat: int) -> None:
    prompt = PromptEncoder(sd1, emphasis="None").tokenize("(cat:1.5)")

    (chunk,) = prompt.chunks
    assert cat in chunk.tokens and len([t for t in chunk.tokens if t != EOS]) > 2
    assert set(chunk.multipliers) == {1.0}


def test_embedding_that_does_not_fit_closes_the_chunk_first(sd1: LoadedModel, cat: int) -> None:
    database = EmbeddingDatabase.from_embeddings(
        [embedding("star", SD_WIDTHS, count=3)], widths=SD_WIDTHS
    )
    prompt = PromptEncoder(sd1, embeddings=database).tokenize(words(73) + " (star:1.2) cat")

    first, second = prompt.chunks
    assert list(first.tokens) == window([cat] * 73)
    assert list(second.tokens) == window([0, 0, 0, cat])
    assert second.multipliers[1:5] == (1.2, 1.2, 1.2, 1.0)
    assert [(p.position, p.embedding.name) for p in second.embeddings] == [(1, "star")]
    assert first.embeddings == ()


def test_embedding_moved_by_the_comma_backtrack_keeps_its_vectors(
    sd1: LoadedModel, cat: int, comma: int
) -> None:
    database = EmbeddingDatabase.from_embeddings(
        [embedding("star", SD_WIDTHS, count=2)], widths=SD_WIDTHS
    )
    prompt = PromptEncoder(sd1, embeddings=database).tokenize(words(70) + ", cat star cat cat")

    first, second = prompt.chunks
    assert list(first.tokens) == window([cat] * 70 + [comma])
    assert list(second.tokens) == window([cat, 0, 0, cat, cat])
    assert first.embeddings == ()
    assert [(p.position, p.embedding.name) for p in second.embeddings] == [(2, "star")]


@pytest.mark.parametrize("backtrack", [-1, 75])
def test_comma_backtrack_outside_a_chunk_is_refused(sd1: LoadedModel, backtrack: int) -> None:
    with pytest.raises(ConfigError, match="comma backtrack"):
        PromptEncoder(sd1, comma_backtrack=backtrack)
