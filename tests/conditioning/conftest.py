"""Tiny models of each family, loaded once per session, and helpers to hand-compute encodings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from brushwork.formats.embedding import TEXT_ENCODER, TEXT_ENCODER_2, Embedding
from brushwork.loading import LoadedModel, load_model
from brushwork.testing.factory import build_components, write_checkpoint_file

BOS, EOS = 49406, 49407
FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    folder = tmp_path_factory.mktemp("conditioning-models")
    loaded = {}
    for family in FAMILIES:
        path = write_checkpoint_file(build_components(family), folder / f"{family}.safetensors")
        loaded[family] = load_model(path, device="cpu", precision="fp32", vae="none")
    return loaded


@pytest.fixture(scope="session")
def sd1(models: dict[str, LoadedModel]) -> LoadedModel:
    return models["sd1"]


@pytest.fixture(scope="session")
def sd2(models: dict[str, LoadedModel]) -> LoadedModel:
    return models["sd2"]


@pytest.fixture(scope="session")
def sdxl(models: dict[str, LoadedModel]) -> LoadedModel:
    return models["sdxl"]


def token_id(model: LoadedModel, word: str) -> int:
    """The id of one word that the CLIP tokenizer keeps as a single token."""
    ids = model.tokenizers[TEXT_ENCODER](word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is {len(ids)} tokens"
    return int(ids[0])


def window(ids: list[int], pad: int = EOS) -> list[int]:
    """A 77-token chunk: BOS, the ids, EOS, then `pad` to the end."""
    return [BOS, *ids, EOS] + [pad] * (75 - len(ids))


def run(
    model: LoadedModel,
    name: str,
    chunks: list[list[int]],
    *,
    rows: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
    """One encoder, by hand: (last_hidden_state, pooled text_embeds or None, hidden_states).

    `rows` puts vectors into the vocabulary of a copy of the token embedding (id -> vector), so
    the encoder sees them as ordinary tokens: an independent way to feed embedding vectors.
    """
    encoder = model.text_encoders[name]
    table = encoder.get_input_embeddings()
    saved = table.weight.detach().clone()
    try:
        with torch.no_grad():
            for token, vector in (rows or {}).items():
                table.weight[token] = vector
            output = encoder(input_ids=torch.tensor(chunks), output_hidden_states=True)
    finally:
        with torch.no_grad():
            table.weight.copy_(saved)
    return output.last_hidden_state, getattr(output, "text_embeds", None), output.hidden_states


def final_norm(model: LoadedModel, name: str, hidden: torch.Tensor) -> torch.Tensor:
    encoder = model.text_encoders[name]
    with torch.no_grad():
        return getattr(encoder, "text_model", encoder).final_layer_norm(hidden)


def embedding(
    name: str, widths: dict[str, int], count: int = 1, seed: int = 0, scale: float = 1.0
) -> Embedding:
    generator = torch.Generator().manual_seed(seed)
    vectors = {
        slot: scale * torch.randn(count, width, generator=generator)
        for slot, width in widths.items()
    }
    return Embedding(name=name, vectors=vectors)


SD_WIDTHS = {TEXT_ENCODER: 64}
SDXL_WIDTHS = {TEXT_ENCODER: 64, TEXT_ENCODER_2: 128}


@contextmanager
def counting_calls(model: LoadedModel) -> Iterator[dict[str, int]]:
    """Counts forward calls of each text encoder while the block runs."""
    counts = dict.fromkeys(model.text_encoders, 0)
    handles = []
    for name, encoder in model.text_encoders.items():

        def hook(*_: object, name: str = name) -> None:
            counts[name] += 1

        handles.append(encoder.register_forward_hook(hook))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()
