"""Captions -> cross-attention context for training, differentiable through the text encoder.

This is sd-scripts' training encoding, not A1111's prompt language: no attention weights, no
BREAK, no embeddings by name (`brushwork.conditioning` does those for generation, without
gradients). The rules, as sd-scripts (`strategy_sd`):

* `max_token_length` 75 (default): one 77-token window (BOS, 75 tokens, EOS/padding); longer
  captions are truncated. 150 or 225: the padded ids are cut into 75-token chunks, each encoded
  with its own BOS/EOS, and the outputs joined as BOS + the chunks' inner states + the last EOS
  (2 + 75·n positions).
* `clip_skip` n > 1: the n-th hidden state from the end, through the final layer norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import CLIPTokenizer

from brushwork.core.errors import ConfigError

TOKEN_LENGTHS = (75, 150, 225)
CHUNK = 75


def check_token_length(max_token_length: int | None) -> int:
    length = max_token_length or CHUNK
    if length not in TOKEN_LENGTHS:
        raise ConfigError(
            f"max_token_length is {max_token_length}; it must be 75, 150 or 225",
            hint="sd-scripts accepts the same three values",
        )
    return length


class CaptionEncoder:
    """Tokenises captions and runs the (possibly wrapped and trained) text encoder."""

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        encoder: torch.nn.Module,
        *,
        final_layer_norm: torch.nn.Module,
        clip_skip: int = 1,
        max_token_length: int | None = None,
    ) -> None:
        if clip_skip < 1:
            raise ConfigError(f"clip_skip is {clip_skip}; it must be >= 1")
        self.tokenizer = tokenizer
        self.encoder = encoder  # what is called (a DDP wrapper when distributed)
        self.final_layer_norm = final_layer_norm
        self.clip_skip = clip_skip
        self.max_token_length = check_token_length(max_token_length)

    @property
    def chunks(self) -> int:
        return self.max_token_length // CHUNK

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids [B, chunks, 77]."""
        inner = self.max_token_length
        ids = self.tokenizer(
            list(captions),
            padding="max_length",
            truncation=True,
            max_length=inner + 2,
            return_tensors="pt",
        ).input_ids
        if self.chunks == 1:
            single: torch.Tensor = ids.unsqueeze(1)
            return single
        bos, eos = ids[:, :1], ids[:, -1:]
        parts = [
            torch.cat([bos, ids[:, 1 + i : 1 + i + CHUNK], eos], dim=1)
            for i in range(0, inner, CHUNK)
        ]
        return torch.stack(parts, dim=1)

    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Context [B, 77 or 2 + 75·chunks, dim] for token ids from `tokenize`."""
        batch, chunks, width = ids.shape
        flat = ids.reshape(batch * chunks, width)
        if self.clip_skip == 1:
            states = self.encoder(flat)[0]
        else:
            out = self.encoder(flat, output_hidden_states=True, return_dict=True)
            hidden = out.hidden_states[-self.clip_skip]
            weight = getattr(self.final_layer_norm, "weight", None)
            if weight is not None:  # autocast may hand back fp32 for a bf16/fp16 encoder
                hidden = hidden.to(weight.dtype)
            states = self.final_layer_norm(hidden)
        joined: torch.Tensor = states.reshape(batch, chunks * width, -1)
        states = joined
        if chunks == 1:
            return joined
        inner = [states[:, i * width + 1 : (i + 1) * width - 1] for i in range(chunks)]
        return torch.cat([states[:, :1], *inner, states[:, -1:]], dim=1)

    def encode(self, captions: Sequence[str], device: torch.device) -> torch.Tensor:
        return self.encode_ids(self.tokenize(captions).to(device))
