"""Caption encoding for training: windows of 75 tokens, clip skip, gradients."""

from __future__ import annotations

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.testing.factory import build_components, tokenizer
from brushwork.training.text import CaptionEncoder


def _encoder(**options: object) -> CaptionEncoder:
    model = build_components("sd1").text_encoders["text_encoder"]
    return CaptionEncoder(
        tokenizer(),
        model,
        final_layer_norm=model.final_layer_norm,
        **options,  # type: ignore[arg-type]
    )


def test_one_window_matches_a_plain_encoder_call() -> None:
    encoder = _encoder()
    context = encoder.encode(["a photo of a cat"], torch.device("cpu"))
    ids = tokenizer()(
        ["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt"
    )
    with torch.no_grad():
        expected = encoder.encoder(ids.input_ids)[0]
    assert context.shape == (1, 77, 64)
    torch.testing.assert_close(context.detach(), expected)


def test_long_captions_use_chunks_like_sd_scripts() -> None:
    encoder = _encoder(max_token_length=150)
    ids = encoder.tokenize(["word " * 100])
    assert ids.shape == (1, 2, 77)
    assert int(ids[0, 0, 0]) == int(ids[0, 1, 0]) == 49406  # every chunk starts with BOS
    context = encoder.encode_ids(ids)
    assert context.shape == (1, 152, 64)  # BOS + 2 x 75 + EOS


def test_clip_skip_takes_the_earlier_layer_through_the_final_norm() -> None:
    encoder = _encoder(clip_skip=2)
    ids = encoder.tokenize(["a cat"])
    with torch.no_grad():
        out = encoder.encoder(ids[:, 0], output_hidden_states=True)
        expected = encoder.final_layer_norm(out.hidden_states[-2])
        torch.testing.assert_close(encoder.encode_ids(ids), expected)


def test_gradients_reach_the_text_encoder() -> None:
    encoder = _encoder()
    encoder.encode(["a cat"], torch.device("cpu")).sum().backward()
    assert encoder.encoder.embeddings.token_embedding.weight.grad is not None


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="max_token_length"):
        _encoder(max_token_length=100)
    with pytest.raises(ConfigError, match="clip_skip"):
        _encoder(clip_skip=0)
