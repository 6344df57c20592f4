"""Prompt text -> text-encoder conditioning, the way A1111 computes it.

Each 77-token chunk (see `chunks`) runs through every text encoder of the model on its own; the
chunks' outputs are joined along the token axis. What each family takes from its encoders
(A1111's `sd_hijack_clip.py`, `sd_hijack_open_clip.py`, `sd_models_xl.py`):

* SD1 (CLIP-L): the hidden states ``clip_skip`` layers from the end, then the final layer norm
  (clip skip 1 is the ordinary last layer).
* SD2 (OpenCLIP-H): the last layer of the loaded encoder, with the final layer norm. The loaded
  encoder already stops at the penultimate layer of the original model (diffusers keeps 23 of
  24 layers), which is what SD2 uses. Clip skip does not apply (A1111 ignores it too).
* SDXL: CLIP-L's and OpenCLIP-bigG's penultimate hidden states, without the final layer norm,
  joined along the feature axis (768 + 1280 = 2048). Clip skip does not apply unless
  ``sdxl_clip_l_skip`` (A1111's setting of that name) lets it choose CLIP-L's layer. The pooled
  output is bigG's projected end-of-text state of the first chunk.

OpenCLIP encoders (SD2's, SDXL's second) see id 0 after the first end-of-text token, as padding.
Textual-inversion vectors replace the token embeddings (the encoder's input) at their
placeholders, before position embeddings are added: SDXL's ``clip_l`` vectors go to the first
encoder, ``clip_g`` vectors to the second. Weights are applied to each encoder's output by the
emphasis mode (see `emphasis`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from brushwork.conditioning.chunks import (
    CHUNK_LENGTH,
    DEFAULT_COMMA_BACKTRACK,
    PromptChunk,
    SpecialTokens,
    TokenizedPrompt,
    chunk_prompt,
)
from brushwork.conditioning.embeddings import EmbeddingDatabase, EmbeddingMatcher
from brushwork.conditioning.emphasis import NONE, ORIGINAL, apply_emphasis, check_emphasis
from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.embedding import TEXT_ENCODER, TEXT_ENCODER_2, Embedding
from brushwork.loading.model import LoadedModel
from brushwork.loading.modules import TextEncoder
from brushwork.prompt import parse_attention

COMMA = ",</w>"  # the CLIP BPE entry of a comma ending a word


@dataclass(frozen=True, eq=False)
class Conditioning:
    """One prompt text, encoded (extra networks stripped; no AND, no schedule syntax left).

    `context`: [1, 77 * chunks, context_dim], the UNet's cross-attention input (SDXL: CLIP-L's
    and bigG's hidden states side by side). `pooled`: [1, pooled_dim] for SDXL, else None.
    """

    context: torch.Tensor
    pooled: torch.Tensor | None
    chunks: int


@dataclass(frozen=True)
class HiddenLayer:
    """Which hidden states an encoder's conditioning comes from."""

    index: int  # into transformers' `hidden_states` (0 = token + position embeddings)
    final_norm: bool  # whether the final layer norm is applied to them


@dataclass(frozen=True, eq=False)
class _EncodedText:
    """One text through every text encoder, before emphasis."""

    prompt: TokenizedPrompt
    hidden: dict[str, torch.Tensor]  # encoder name -> [chunks, 77, width]
    multipliers: torch.Tensor  # [chunks, 77], float32
    pooled: torch.Tensor | None  # [1, pooled_dim]


def hidden_layer(
    family: BaseFamily, encoder_name: str, clip_skip: int, *, sdxl_clip_l_skip: bool = False
) -> HiddenLayer:
    """The layer A1111 conditions on, for one encoder of a model of `family` (module docstring)."""
    if family is BaseFamily.SD1:
        return HiddenLayer(-clip_skip, True)
    if family is BaseFamily.SD2:
        return HiddenLayer(-1, True)
    if encoder_name == TEXT_ENCODER and sdxl_clip_l_skip:
        return HiddenLayer(-clip_skip, False)
    return HiddenLayer(-2, False)


def _text_model(encoder: TextEncoder) -> Any:
    """The module holding `final_layer_norm` (transformers 5 nests it only with a projection)."""
    return getattr(encoder, "text_model", encoder)


class PromptEncoder:
    """Encodes prompt texts for one loaded model. The text encoders run once per distinct
    input (token ids and embeddings), so texts that differ only in weights or spacing share one
    run; the caches live on this object.

    The cache assumes the text encoders' weights do not change while it is used: make a new
    encoder (or call `clear_cache`) after applying or removing a LoRA.
    `comma_backtrack` is A1111's `comma_padding_backtrack` (0 turns it off).
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        clip_skip: int = 1,
        embeddings: EmbeddingDatabase | None = None,
        emphasis: str = ORIGINAL,
        sdxl_clip_l_skip: bool = False,
        comma_backtrack: int = DEFAULT_COMMA_BACKTRACK,
    ) -> None:
        self.model = model
        self.emphasis = check_emphasis(emphasis)
        self.comma_backtrack = comma_backtrack
        self.layers = {
            name: hidden_layer(model.family, name, clip_skip, sdxl_clip_l_skip=sdxl_clip_l_skip)
            for name in model.text_encoders
        }
        self._check_options(clip_skip)
        tokenizer = model.tokenizers[TEXT_ENCODER]
        self._tokenizer = tokenizer
        self._special = SpecialTokens(
            int(tokenizer.bos_token_id),
            int(tokenizer.eos_token_id),
            tokenizer.get_vocab().get(COMMA),
        )
        self._pad_ids = {
            name: _pad_id(model.tokenizers[name].pad_token_id, self._special.eos)
            for name in self.layers
        }
        loaded = embeddings.loaded.values() if embeddings is not None else ()
        self._matcher = EmbeddingMatcher(loaded, self._tokenize) if loaded else None
        self._encoded: dict[str, _EncodedText] = {}
        # encoder outputs by what the encoders see (ids and embeddings; weights come after)
        self._outputs: dict[tuple[Any, ...], tuple[dict[str, torch.Tensor], torch.Tensor | None]]
        self._outputs = {}
        self._conditionings: dict[str, Conditioning] = {}
        self._used: dict[str, Embedding] = {}

    def _check_options(self, clip_skip: int) -> None:
        if not 0 <= self.comma_backtrack < CHUNK_LENGTH:
            raise ConfigError(
                f"comma backtrack must be from 0 to {CHUNK_LENGTH - 1}, not {self.comma_backtrack}"
            )
        if clip_skip < 1:
            raise ConfigError(f"clip skip must be 1 or more, not {clip_skip}")
        for name, layer in self.layers.items():
            depth = int(self.model.text_encoders[name].config.num_hidden_layers)
            if -layer.index > depth:
                raise ConfigError(
                    f"clip skip {clip_skip} is deeper than {name}'s {depth} layers",
                    hint=f"use a clip skip from 1 to {depth}",
                )

    # -- tokens ------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        result = self._tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)
        return [list(ids) for ids in result["input_ids"]]

    def tokenize(self, text: str) -> TokenizedPrompt:
        """The text's chunks (token ids, weights, embedding placements) and token count."""
        runs = [(text, 1.0)] if self.emphasis == NONE else parse_attention(text)
        return chunk_prompt(
            runs,
            self._tokenize,
            self._special,
            find_embedding=self._matcher,
            comma_backtrack=self.comma_backtrack,
        )

    # -- encoding ----------------------------------------------------------------------------

    def encode(self, text: str) -> Conditioning:
        """The text's conditioning (cached per distinct text)."""
        found = self._conditionings.get(text)
        if found is None:
            found = self.encode_batch([text])[0]
            self._conditionings[text] = found
        return found

    def encode_batch(self, texts: Sequence[str]) -> list[Conditioning]:
        """Texts encoded together, as A1111 encodes the texts of one prompt's schedule: all get
        as many chunks as the longest (padded with empty-prompt chunks), and the emphasis mean
        is restored over the batch, chunk by chunk. The text encoders still run once per distinct
        input."""
        if not texts:
            return []
        encoded = [self._encode_text(text) for text in texts]
        chunks = max(len(item.prompt.chunks) for item in encoded)
        if any(len(item.prompt.chunks) < chunks for item in encoded):
            empty = self._encode_text("")
            encoded = [_pad_chunks(item, empty, chunks) for item in encoded]
        first = {text: index for index, text in reversed(list(enumerate(texts)))}
        keep = sorted(set(first.values()))  # identical texts give identical results
        per_encoder = [self._emphasize(encoded, name, keep) for name in self.layers]
        made = {
            index: Conditioning(
                context=torch.cat([parts[n] for parts in per_encoder], dim=-1).unsqueeze(0),
                pooled=encoded[index].pooled,
                chunks=chunks,
            )
            for n, index in enumerate(keep)
        }
        return [made[first[text]] for text in texts]

    def zeros(self) -> Conditioning:
        """All-zero conditioning of one chunk: SDXL's empty negative prompt in A1111."""
        empty = self.encode("")
        pooled = None if empty.pooled is None else torch.zeros_like(empty.pooled)
        return Conditioning(torch.zeros_like(empty.context), pooled, 1)

    def used_embeddings(self) -> dict[str, Embedding]:
        """The embeddings found in the texts encoded so far, by name (for "TI hashes")."""
        return dict(self._used)

    def clear_cache(self) -> None:
        """Forget every encoded text (after the text encoders' weights changed)."""
        self._encoded.clear()
        self._outputs.clear()
        self._conditionings.clear()

    def _emphasize(
        self, encoded: list[_EncodedText], name: str, keep: list[int]
    ) -> list[torch.Tensor]:
        """Weighted hidden states of one encoder, [77 * chunks, width], for the texts at `keep`
        (the emphasis mean is still taken over the whole batch)."""
        dtype = encoded[0].hidden[name].dtype
        per_chunk = [
            apply_emphasis(
                torch.stack([item.hidden[name][index] for item in encoded]),
                torch.stack([item.multipliers[index] for item in encoded]),
                self.emphasis,
            ).to(dtype)
            for index in range(len(encoded[0].prompt.chunks))
        ]
        return [torch.cat([chunk[b] for chunk in per_chunk]) for b in keep]

    def _encode_text(self, text: str) -> _EncodedText:
        found = self._encoded.get(text)
        if found is not None:
            return found
        prompt = self.tokenize(text)
        for chunk in prompt.chunks:
            self._used.update((p.embedding.name, p.embedding) for p in chunk.embeddings)
        key = _encoder_input_key(prompt)
        outputs = self._outputs.get(key)
        if outputs is None:
            outputs = self._run_encoders(prompt.chunks)
            self._outputs[key] = outputs
        hidden, pooled = outputs
        device = next(iter(hidden.values())).device
        multipliers = torch.tensor(
            [chunk.multipliers for chunk in prompt.chunks], dtype=torch.float32, device=device
        )
        found = _EncodedText(prompt, hidden, multipliers, pooled)
        self._encoded[text] = found
        return found

    def _run_encoders(
        self, chunks: Sequence[PromptChunk]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        hidden: dict[str, torch.Tensor] = {}
        pooled = None
        with torch.no_grad():
            for name, encoder in self.model.text_encoders.items():
                hidden[name], pooled_here = self._run_encoder(name, encoder, chunks)
                if name == TEXT_ENCODER_2 and self.model.family is BaseFamily.SDXL:
                    pooled = pooled_here
        return hidden, pooled

    def _run_encoder(
        self, name: str, encoder: TextEncoder, chunks: Sequence[PromptChunk]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[chunks, 77, width] hidden states of one encoder, and its pooled output of chunk 0."""
        device = encoder.device
        ids = torch.tensor([chunk.tokens for chunk in chunks], dtype=torch.long, device=device)
        pad, eos = self._pad_ids[name], self._special.eos
        if pad != eos:  # OpenCLIP: everything after the first end-of-text is padding
            after_end = (ids == eos).int().cumsum(dim=1) - (ids == eos).int() > 0
            ids = ids.masked_fill(after_end, pad)
        layer = self.layers[name]
        hook = encoder.get_input_embeddings().register_forward_hook(_vector_injector(name, chunks))
        try:
            output = encoder(input_ids=ids, output_hidden_states=True)
        finally:
            hook.remove()
        hidden = output.hidden_states[layer.index]
        if layer.final_norm:
            hidden = _text_model(encoder).final_layer_norm(hidden)
        pooled = getattr(output, "text_embeds", None)
        return hidden, None if pooled is None else pooled[:1]


def _pad_id(pad_token_id: int | None, eos: int) -> int:
    """The id padding a chunk after its end-of-text: the tokenizer's pad ("!", id 0, for the
    OpenCLIP encoders), or the end-of-text id itself (CLIP-L)."""
    return eos if pad_token_id is None else int(pad_token_id)


def _encoder_input_key(prompt: TokenizedPrompt) -> tuple[Any, ...]:
    """What the text encoders see of a prompt: the ids and the embeddings placed in them."""
    return tuple(
        (chunk.tokens, tuple((p.position, p.embedding.name) for p in chunk.embeddings))
        for chunk in prompt.chunks
    )


def _vector_injector(name: str, chunks: Sequence[PromptChunk]) -> Any:
    """A forward hook for the token-embedding module that writes embedding vectors over the
    placeholder rows (A1111's `EmbeddingsWithFixes`)."""

    def inject(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not any(chunk.embeddings for chunk in chunks):
            return output
        output = output.clone()
        for index, chunk in enumerate(chunks):
            for placement in chunk.embeddings:
                vectors = placement.embedding.vectors[name]
                end = placement.position + vectors.shape[0]
                output[index, placement.position : end] = vectors.to(output.device, output.dtype)
        return output

    return inject


def _pad_chunks(item: _EncodedText, empty: _EncodedText, chunks: int) -> _EncodedText:
    """`item` with empty-prompt chunks appended up to `chunks` (A1111's `empty_chunk`)."""
    missing = chunks - len(item.prompt.chunks)
    if missing == 0:
        return item
    prompt = TokenizedPrompt(
        item.prompt.chunks + empty.prompt.chunks * missing, item.prompt.token_count
    )
    hidden = {
        name: torch.cat([tensor, empty.hidden[name].expand(missing, -1, -1)])
        for name, tensor in item.hidden.items()
    }
    multipliers = torch.cat([item.multipliers, empty.multipliers.expand(missing, -1)])
    return _EncodedText(prompt, hidden, multipliers, item.pooled)
