"""conditioning floor (F3): prompt texts -> text-encoder conditioning, as A1111 computes it.

    encoder = PromptEncoder(model, clip_skip=1, embeddings=EmbeddingDatabase.for_model(paths, model))
    positive = schedule_prompt(encoder, prompt, steps)                  # AND parts, editing
    negative = schedule_prompt(encoder, negative_prompt, steps, allow_and=False)
    positive.at_step(k) -> [(Conditioning(context, pooled, chunks), weight), ...]

75-token chunks with A1111's comma backtrack and BREAK (`chunks`), emphasis with mean
restoration (`emphasis`), clip skip and SDXL's two encoders (`encoder`), textual-inversion
embeddings matched by name (`embeddings`), per-step schedules (`schedule`).
"""

from brushwork.conditioning.chunks import (
    CHUNK_LENGTH,
    DEFAULT_COMMA_BACKTRACK,
    EmbeddingPlacement,
    PromptChunk,
    SpecialTokens,
    TokenizedPrompt,
    chunk_prompt,
)
from brushwork.conditioning.embeddings import (
    EmbeddingDatabase,
    EmbeddingMatcher,
    family_widths,
    incompatibility,
    model_widths,
)
from brushwork.conditioning.emphasis import EMPHASIS_MODES, apply_emphasis, check_emphasis
from brushwork.conditioning.encoder import Conditioning, HiddenLayer, PromptEncoder, hidden_layer
from brushwork.conditioning.schedule import ScheduledPrompt, schedule_prompt

__all__ = [
    "CHUNK_LENGTH",
    "DEFAULT_COMMA_BACKTRACK",
    "EMPHASIS_MODES",
    "Conditioning",
    "EmbeddingDatabase",
    "EmbeddingMatcher",
    "EmbeddingPlacement",
    "HiddenLayer",
    "PromptChunk",
    "PromptEncoder",
    "ScheduledPrompt",
    "SpecialTokens",
    "TokenizedPrompt",
    "apply_emphasis",
    "check_emphasis",
    "chunk_prompt",
    "family_widths",
    "hidden_layer",
    "incompatibility",
    "model_widths",
    "schedule_prompt",
]
