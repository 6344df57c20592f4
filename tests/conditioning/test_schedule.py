"""Per-step schedules: prompt editing, alternation, AND parts, negatives, batch emphasis."""

from __future__ import annotations

import torch

from brushwork.conditioning import PromptEncoder, schedule_prompt
from brushwork.formats.embedding import TEXT_ENCODER, TEXT_ENCODER_2
from brushwork.loading import LoadedModel

from .conftest import counting_calls


def _texts(encoder: PromptEncoder, scheduled: object, steps: int, names: list[str]) -> list[str]:
    """Which of `names` each step's (single-part) conditioning equals."""
    by_context = {name: encoder.encode(name).context for name in names}
    out = []
    for step in range(steps):
        ((conditioning, _),) = scheduled.at_step(step)  # type: ignore[attr-defined]
        matches = [n for n, c in by_context.items() if torch.equal(conditioning.context, c)]
        out.append("/".join(matches))
    return out


def test_prompt_editing_switches_after_the_step_a1111_does(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    with counting_calls(sd1) as calls:
        scheduled = schedule_prompt(encoder, "[cat:dog:0.5]", 10)
    # when = int(0.5 * 10) = 5; the sampler's step k uses `cat` while k <= 5
    assert _texts(encoder, scheduled, 10, ["cat", "dog"]) == ["cat"] * 6 + ["dog"] * 4
    assert calls == {TEXT_ENCODER: 2}


def test_each_distinct_text_is_encoded_once_across_parts_and_calls(sdxl: LoadedModel) -> None:
    encoder = PromptEncoder(sdxl)
    with counting_calls(sdxl) as calls:
        schedule_prompt(encoder, "[cat:dog:0.5] AND [cat:dog:3]:0.5 AND cat", 10)
        schedule_prompt(encoder, "[cat|dog]", 10, allow_and=False)
        # weights and spacing do not change what the encoders see
        schedule_prompt(encoder, "(cat:1.3) AND  [dog]", 10)
    assert calls == {TEXT_ENCODER: 2, TEXT_ENCODER_2: 2}


def test_alternation_shows_the_first_item_twice(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    scheduled = schedule_prompt(encoder, "[cat|dog]", 4)

    assert _texts(encoder, scheduled, 4, ["cat", "dog"]) == ["cat", "cat", "dog", "cat"]
    # past the last entry, A1111 falls back to the first
    ((conditioning, _),) = scheduled.at_step(10)
    assert torch.equal(conditioning.context, encoder.encode("cat").context)


def test_and_parts_keep_their_weights(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    scheduled = schedule_prompt(encoder, "cat AND dog:0.5 AND bird :-1", 20)

    parts = scheduled.at_step(0)
    assert [weight for _, weight in parts] == [1.0, 0.5, -1.0]
    for (conditioning, _), text in zip(parts, ["cat", "dog", "bird"], strict=True):
        assert torch.equal(conditioning.context, encoder.encode(text).context)


def test_negative_prompt_keeps_and_as_text(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    scheduled = schedule_prompt(encoder, "cat AND dog:0.5", 20, allow_and=False)

    ((conditioning, weight),) = scheduled.at_step(0)
    assert weight == 1.0
    assert torch.equal(conditioning.context, encoder.encode("cat AND dog:0.5").context)
    assert token_of(encoder, "and") in encoder.tokenize("cat AND dog:0.5").chunks[0].tokens


def token_of(encoder: PromptEncoder, word: str) -> int:
    (chunk,) = encoder.tokenize(word).chunks
    return chunk.tokens[1]


def test_sdxl_empty_negative_is_zeros(sdxl: LoadedModel) -> None:
    encoder = PromptEncoder(sdxl)

    negative = schedule_prompt(encoder, "", 20, allow_and=False)
    positive = schedule_prompt(encoder, "", 20)

    ((zeros, _),) = negative.at_step(0)
    ((empty, _),) = positive.at_step(0)
    assert zeros.context.shape == (1, 77, 192) and not zeros.context.any()
    assert zeros.pooled is not None and not zeros.pooled.any()
    assert empty.context.any() and empty.pooled is not None and empty.pooled.any()


def test_sd1_empty_negative_is_the_encoded_empty_prompt(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    ((negative, _),) = schedule_prompt(encoder, "", 20, allow_and=False).at_step(0)

    assert torch.equal(negative.context, encoder.encode("").context)


def test_texts_of_one_schedule_get_the_same_chunk_count(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    long = " ".join(["dog"] * 80)
    scheduled = schedule_prompt(encoder, f"[cat:{long}:5]", 10)

    ((short_cond, _),) = scheduled.at_step(0)
    ((long_cond, _),) = scheduled.at_step(9)
    assert short_cond.chunks == long_cond.chunks == 2
    assert torch.equal(short_cond.context[:, :77], encoder.encode("cat").context)
    assert torch.equal(short_cond.context[:, 77:], encoder.encode("").context)


def test_emphasis_mean_is_restored_over_the_schedule_batch(sd1: LoadedModel) -> None:
    # A1111 encodes a schedule's texts as one batch; the mean restoration spans the batch
    encoder = PromptEncoder(sd1, emphasis="Ignore")
    raw = torch.cat([encoder.encode("cat dog").context, encoder.encode("dog dog").context])

    scheduled = schedule_prompt(PromptEncoder(sd1), "[(cat:1.8):dog:5] dog", 10)

    ((first, _),) = scheduled.at_step(0)
    ((second, _),) = scheduled.at_step(9)
    weights = torch.ones(2, 77, 1)
    weights[0, 1] = 1.8
    weighted = raw * weights
    expected = weighted * (raw.mean() / weighted.mean())
    torch.testing.assert_close(torch.cat([first.context, second.context]), expected)
    alone = PromptEncoder(sd1).encode("(cat:1.8) dog").context
    assert not torch.allclose(first.context, alone, rtol=0, atol=1e-7)


def test_hires_schedule_counts_from_the_first_pass(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    scheduled = schedule_prompt(encoder, "[cat:dog:15]", 10, hires_steps=10)

    assert _texts(encoder, scheduled, 10, ["cat", "dog"]) == ["cat"] * 6 + ["dog"] * 4
