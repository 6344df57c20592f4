"""Encoding: clip skip, SD2/SDXL layers and padding, pooled output, emphasis and its mean."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from brushwork.conditioning import PromptEncoder
from brushwork.core.errors import ConfigError
from brushwork.formats.embedding import TEXT_ENCODER, TEXT_ENCODER_2
from brushwork.loading import LoadedModel

from .conftest import counting_calls, final_norm, run, token_id, window


def test_sd1_clip_skip_1_is_the_last_layer(sd1: LoadedModel) -> None:
    cat = token_id(sd1, "cat")
    last, _, _ = run(sd1, TEXT_ENCODER, [window([cat, cat])])

    conditioning = PromptEncoder(sd1).encode("cat cat")

    assert conditioning.context.shape == (1, 77, 64)
    assert conditioning.pooled is None and conditioning.chunks == 1
    torch.testing.assert_close(conditioning.context[0], last[0], rtol=0, atol=1e-6)


def test_sd1_clip_skip_2_is_the_penultimate_layer_with_the_final_norm(sd1: LoadedModel) -> None:
    cat = token_id(sd1, "cat")
    _, _, hidden_states = run(sd1, TEXT_ENCODER, [window([cat])])
    expected = final_norm(sd1, TEXT_ENCODER, hidden_states[-2])

    conditioning = PromptEncoder(sd1, clip_skip=2).encode("cat")

    torch.testing.assert_close(conditioning.context[0], expected[0], rtol=0, atol=1e-6)
    assert not torch.allclose(conditioning.context, PromptEncoder(sd1).encode("cat").context)


@pytest.mark.parametrize("clip_skip", [0, 3])
def test_clip_skip_outside_the_encoder_is_refused(sd1: LoadedModel, clip_skip: int) -> None:
    with pytest.raises(ConfigError, match="clip skip"):
        PromptEncoder(sd1, clip_skip=clip_skip)


def test_sd2_pads_with_zero_and_ignores_clip_skip(sd2: LoadedModel) -> None:
    cat = token_id(sd2, "cat")
    last, _, _ = run(sd2, TEXT_ENCODER, [window([cat], pad=0)])

    plain = PromptEncoder(sd2).encode("cat")
    skipped = PromptEncoder(sd2, clip_skip=2).encode("cat")

    torch.testing.assert_close(plain.context[0], last[0], rtol=0, atol=1e-6)
    assert torch.equal(plain.context, skipped.context)
    assert plain.pooled is None


def test_sdxl_joins_both_penultimate_layers_and_pools_the_first_chunk(sdxl: LoadedModel) -> None:
    cat = token_id(sdxl, "cat")
    prompt = " ".join(["cat"] * 80)
    chunks_l = [window([cat] * 75), window([cat] * 5)]
    chunks_g = [window([cat] * 75, pad=0), window([cat] * 5, pad=0)]
    _, _, hidden_l = run(sdxl, TEXT_ENCODER, chunks_l)
    _, pooled, hidden_g = run(sdxl, TEXT_ENCODER_2, chunks_g)
    assert pooled is not None

    conditioning = PromptEncoder(sdxl, clip_skip=2).encode(prompt)  # clip skip: no effect

    expected = torch.cat([hidden_l[-2], hidden_g[-2]], dim=-1).reshape(1, 154, 192)
    assert conditioning.chunks == 2
    torch.testing.assert_close(conditioning.context, expected, rtol=0, atol=1e-6)
    assert conditioning.pooled is not None and conditioning.pooled.shape == (1, 128)
    torch.testing.assert_close(conditioning.pooled, pooled[:1], rtol=0, atol=1e-6)


def test_sdxl_clip_l_skip_setting_picks_clip_l_layer(sdxl: LoadedModel) -> None:
    cat = token_id(sdxl, "cat")
    _, _, hidden_l = run(sdxl, TEXT_ENCODER, [window([cat])])

    last = PromptEncoder(sdxl, sdxl_clip_l_skip=True).encode("cat")
    penultimate = PromptEncoder(sdxl, sdxl_clip_l_skip=True, clip_skip=2).encode("cat")
    default = PromptEncoder(sdxl).encode("cat")

    torch.testing.assert_close(last.context[0, :, :64], hidden_l[-1][0], rtol=0, atol=1e-6)
    assert torch.equal(penultimate.context, default.context)


def _weighted_by_hand(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    multipliers = torch.tensor(weights).reshape(1, 77, 1)
    weighted = hidden * multipliers
    return weighted * (hidden.mean() / weighted.mean())


def test_weight_scales_its_token_then_the_chunk_mean_is_restored(sd1: LoadedModel) -> None:
    cat, dog = token_id(sd1, "cat"), token_id(sd1, "dog")
    last, _, _ = run(sd1, TEXT_ENCODER, [window([cat, dog])])
    weights = [1.0, 1.5] + [1.0] * 75

    context = PromptEncoder(sd1).encode("(cat:1.5) dog").context

    torch.testing.assert_close(context, _weighted_by_hand(last, weights), rtol=0, atol=1e-6)
    torch.testing.assert_close(context.mean(), last.mean(), rtol=1e-5, atol=1e-7)
    ratio = context[0] / last[0]
    rescale = ratio[2].mean()
    torch.testing.assert_close(ratio[1], torch.full((64,), 1.5) * rescale, rtol=1e-4, atol=1e-5)
    assert not torch.isclose(rescale, torch.tensor(1.0))


def test_no_norm_only_multiplies_and_ignore_drops_weights(sd1: LoadedModel) -> None:
    cat, dog = token_id(sd1, "cat"), token_id(sd1, "dog")
    last, _, _ = run(sd1, TEXT_ENCODER, [window([cat, dog])])
    weights = torch.tensor([1.0, 1.5] + [1.0] * 75).reshape(1, 77, 1)

    no_norm = PromptEncoder(sd1, emphasis="No norm").encode("(cat:1.5) dog").context
    ignore = PromptEncoder(sd1, emphasis="Ignore").encode("(cat:1.5) dog").context

    torch.testing.assert_close(no_norm, last * weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(ignore, last, rtol=0, atol=1e-6)


def test_unknown_emphasis_is_refused(sd1: LoadedModel) -> None:
    with pytest.raises(ConfigError, match="emphasis"):
        PromptEncoder(sd1, emphasis="Strong")


def test_mean_is_restored_per_chunk(sd1: LoadedModel) -> None:
    cat = token_id(sd1, "cat")
    last, _, _ = run(sd1, TEXT_ENCODER, [window([cat] * 2), window([cat])])

    context = PromptEncoder(sd1).encode("(cat:2) cat BREAK cat").context

    first = _weighted_by_hand(last[:1], [1.0, 2.0] + [1.0] * 75)
    torch.testing.assert_close(context[:, :77], first, rtol=0, atol=1e-6)
    torch.testing.assert_close(context[:, 77:], last[1:], rtol=0, atol=1e-6)


def test_sdxl_weights_each_encoder_with_its_own_mean(sdxl: LoadedModel) -> None:
    cat = token_id(sdxl, "cat")
    _, _, hidden_l = run(sdxl, TEXT_ENCODER, [window([cat])])
    _, _, hidden_g = run(sdxl, TEXT_ENCODER_2, [window([cat], pad=0)])
    weights = [1.0, 1.3] + [1.0] * 75

    context = PromptEncoder(sdxl).encode("(cat:1.3)").context

    expected = torch.cat(
        [_weighted_by_hand(hidden_l[-2], weights), _weighted_by_hand(hidden_g[-2], weights)], -1
    )
    torch.testing.assert_close(context, expected, rtol=0, atol=1e-6)


def test_each_text_runs_the_encoders_once(sdxl: LoadedModel) -> None:
    encoder = PromptEncoder(sdxl)
    with counting_calls(sdxl) as calls:
        first = encoder.encode("a cat, " * 30)
        again = encoder.encode("a cat, " * 30)
        encoder.encode("a dog")

    assert again is first and first.chunks == 2
    assert calls == {TEXT_ENCODER: 2, TEXT_ENCODER_2: 2}


def test_clear_cache_encodes_again(sd1: LoadedModel) -> None:
    encoder = PromptEncoder(sd1)
    encoder.encode("cat")
    encoder.clear_cache()
    with counting_calls(sd1) as calls:
        encoder.encode("cat")
    assert calls == {TEXT_ENCODER: 1}


def test_output_follows_the_model_dtype(sd1: LoadedModel) -> None:
    half = copy.deepcopy(sd1.text_encoders[TEXT_ENCODER]).to(torch.bfloat16)
    model = dataclasses.replace(sd1, text_encoders={TEXT_ENCODER: half})

    context = PromptEncoder(model).encode("(cat:1.2) dog").context

    assert context.dtype == torch.bfloat16
    reference = PromptEncoder(sd1).encode("(cat:1.2) dog").context
    torch.testing.assert_close(context.float(), reference, rtol=0.1, atol=0.1)
