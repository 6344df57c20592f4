"""Textual-inversion embeddings: loading by width, matching by name, vectors at the input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.conditioning import EmbeddingDatabase, PromptEncoder, schedule_prompt
from brushwork.core.kinds import BaseFamily
from brushwork.formats.embedding import TEXT_ENCODER, TEXT_ENCODER_2, write_embedding
from brushwork.loading import LoadedModel

from .conftest import SD_WIDTHS, SDXL_WIDTHS, embedding, run, token_id, window

SPARE = 1000  # a vocabulary id the prompts below never use; hand computations put vectors there


def _database(*embeddings_: object) -> EmbeddingDatabase:
    return EmbeddingDatabase.from_embeddings(embeddings_, widths=SD_WIDTHS)  # type: ignore[arg-type]


def test_files_of_the_wrong_width_are_skipped_with_the_reason(tmp_path: Path) -> None:
    write_embedding(tmp_path / "good.pt", embedding("good", SD_WIDTHS))
    write_embedding(tmp_path / "wide.pt", embedding("wide", {TEXT_ENCODER: 768}))
    write_embedding(tmp_path / "xl.safetensors", embedding("xl", SDXL_WIDTHS), format="safetensors")
    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    paths = sorted(tmp_path.iterdir())

    database = EmbeddingDatabase.from_files(paths, family=BaseFamily.SD1, widths=SD_WIDTHS)

    assert list(database.loaded) == ["good"]
    assert set(database.skipped) == {"wide", "xl", "broken"}
    assert "768" in database.skipped["wide"] and "64" in database.skipped["wide"]
    assert "SDXL" in database.skipped["xl"]
    assert "broken.pt" in database.skipped["broken"]
    assert database.sources["good"] == tmp_path / "good.pt"


def test_family_widths_are_the_default(tmp_path: Path) -> None:
    write_embedding(tmp_path / "real.pt", embedding("real", {TEXT_ENCODER: 1024}))

    sd2 = EmbeddingDatabase.from_files([tmp_path / "real.pt"], family=BaseFamily.SD2)
    sd1 = EmbeddingDatabase.from_files([tmp_path / "real.pt"], family=BaseFamily.SD1)

    assert list(sd2.loaded) == ["real"] and not sd2.skipped
    assert not sd1.loaded and "768" in sd1.skipped["real"]


def test_for_model_reads_the_widths_of_its_encoders(tmp_path: Path, sdxl: LoadedModel) -> None:
    path = tmp_path / "xl.safetensors"
    write_embedding(path, embedding("xl", SDXL_WIDTHS), format="safetensors")

    assert list(EmbeddingDatabase.for_model([path], sdxl).loaded) == ["xl"]


def test_embedding_vectors_replace_the_input_token_embeddings(sd1: LoadedModel) -> None:
    star = embedding("star", SD_WIDTHS, count=2, seed=3)
    cat = token_id(sd1, "cat")
    vectors = star.vectors[TEXT_ENCODER]
    # by hand: the vectors as two vocabulary entries, placed where the trigger is
    last, _, _ = run(
        sd1,
        TEXT_ENCODER,
        [window([cat, SPARE, SPARE + 1, cat])],
        rows={SPARE: vectors[0], SPARE + 1: vectors[1]},
    )

    encoder = PromptEncoder(sd1, embeddings=_database(star))
    context = encoder.encode("cat star cat").context

    torch.testing.assert_close(context[0], last[0], rtol=0, atol=1e-6)
    assert set(encoder.used_embeddings()) == {"star"}


def test_sdxl_clip_l_vectors_go_to_the_first_encoder_and_clip_g_to_the_second(
    sdxl: LoadedModel,
) -> None:
    star = embedding("star", SDXL_WIDTHS, seed=5)
    cat = token_id(sdxl, "cat")
    _, pooled, hidden_l = run(
        sdxl, TEXT_ENCODER, [window([SPARE, cat])], rows={SPARE: star.vectors[TEXT_ENCODER][0]}
    )
    _, pooled, hidden_g = run(
        sdxl,
        TEXT_ENCODER_2,
        [window([SPARE, cat], pad=0)],
        rows={SPARE: star.vectors[TEXT_ENCODER_2][0]},
    )
    database = EmbeddingDatabase.from_embeddings([star], widths=SDXL_WIDTHS)

    conditioning = PromptEncoder(sdxl, embeddings=database).encode("star cat")

    expected = torch.cat([hidden_l[-2], hidden_g[-2]], dim=-1)
    torch.testing.assert_close(conditioning.context, expected, rtol=0, atol=1e-6)
    assert pooled is not None and conditioning.pooled is not None
    torch.testing.assert_close(conditioning.pooled, pooled, rtol=0, atol=1e-6)


def test_an_ordinary_word_as_name_works_without_touching_the_vocabulary(
    sd1: LoadedModel,
) -> None:
    tokenizer = sd1.tokenizers[TEXT_ENCODER]
    size = len(tokenizer)
    one = embedding("one", SD_WIDTHS, seed=7)
    encoder = PromptEncoder(sd1, embeddings=_database(one))

    lower = encoder.tokenize("one cat")
    upper = encoder.tokenize("One cat")
    shouting = encoder.tokenize("ONE cat")

    for prompt in (lower, upper, shouting):
        (chunk,) = prompt.chunks
        assert chunk.tokens[1] == 0
        assert [(p.position, p.embedding.name) for p in chunk.embeddings] == [(1, "one")]
    assert len(tokenizer) == size
    assert torch.equal(encoder.encode("One cat").context, encoder.encode("one cat").context)
    plain = PromptEncoder(sd1).encode("one cat").context
    assert not torch.allclose(encoder.encode("one cat").context, plain)


def test_the_longest_matching_name_wins(sd1: LoadedModel) -> None:
    short = embedding("cat", SD_WIDTHS, count=1)
    long = embedding("cat girl", SD_WIDTHS, count=2)
    encoder = PromptEncoder(sd1, embeddings=_database(short, long))

    (girl,) = encoder.tokenize("a cat girl").chunks
    (cat,) = encoder.tokenize("a cat boy").chunks

    assert [p.embedding.name for p in girl.embeddings] == ["cat girl"]
    assert list(girl.tokens[:5]) == [49406, token_id(sd1, "a"), 0, 0, 49407]
    assert [p.embedding.name for p in cat.embeddings] == ["cat"]


def test_embedding_in_a_negative_prompt_is_used(sd1: LoadedModel) -> None:
    star = embedding("star", SD_WIDTHS, seed=2)
    encoder = PromptEncoder(sd1, embeddings=_database(star))

    negative = schedule_prompt(encoder, "blurry, star", 10, allow_and=False)

    ((conditioning, _),) = negative.at_step(0)
    plain = PromptEncoder(sd1).encode("blurry, star").context
    assert not torch.allclose(conditioning.context, plain)
    assert set(encoder.used_embeddings()) == {"star"}


def test_too_many_vectors_for_one_chunk_are_skipped() -> None:
    database = _database(embedding("huge", SD_WIDTHS, count=76))

    assert not database.loaded and "75" in database.skipped["huge"]


@pytest.mark.parametrize("name", ["star", "STAR"])
def test_unused_embeddings_are_not_reported(sd1: LoadedModel, name: str) -> None:
    encoder = PromptEncoder(sd1, embeddings=_database(embedding(name, SD_WIDTHS)))
    encoder.encode("a starry night")

    assert encoder.used_embeddings() == {}
