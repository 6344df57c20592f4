"""Textual inversion (A1111's Train tab / sd-scripts' train_textual_inversion): new token vectors
for a trigger word, trained through the frozen text encoder and UNet.

Only the new vectors ([num_vectors_per_token, width]) are parameters. They reach the text
encoder the way A1111 feeds an embedding in: the trigger's token sequence in a caption is
replaced by placeholder ids, and the token-embedding layer (wrapped for the run, put back after)
returns the trained vectors at those positions; the placeholders are ids past the vocabulary,
so the tokenizer and the embedding matrix are never changed. Initial vectors: vector i is the
embedding of init-text token ``i * len // n`` (A1111's rule); zeros when the init text has no
tokens. The file is A1111's `.pt` (`step`, `sd_checkpoint`, `sd_checkpoint_name`) or sd-scripts'
`.safetensors` (`emb_params`); every `save_every_n_steps` a copy `<name>-<step>.pt` is written.
Continuing an embedding (`weights`) goes on from its own `step` up to `max_train_steps` (A1111;
see `template_training`), and the saved steps are absolute.
A warning says when the vectors exceed what the data supports: more vectors than training images,
or prompts (template + longest caption) longer than the 75 tokens CLIP reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from pydantic import Field

from brushwork.core.errors import ConfigError
from brushwork.formats.embedding import TEXT_ENCODER, Embedding, read_embedding, write_embedding
from brushwork.loading import LoadedModel
from brushwork.training.engine import Hooks, SaveInfo, TrainingResult
from brushwork.training.objective import ObjectiveSettings, denoising_loss, noise_latents
from brushwork.training.optim import OptimizerChoice, ParamGroup
from brushwork.training.samples import Preview
from brushwork.training.template_training import (
    LatentSource,
    TemplateTrainingConfig,
    attach_previews,
    batch_prompts,
    check_inputs,
    checkpoint_facts,
    file_step,
    fill_template,
    load_frozen_model,
    make_accelerator,
    prepare_run,
    run_method,
)
from brushwork.training.text import CaptionEncoder

logger = logging.getLogger(__name__)

MAX_VECTORS = 75


class EmbeddingTrainingConfig(TemplateTrainingConfig):
    """A textual-inversion run (sd-scripts: token_string, init_word, num_vectors_per_token)."""

    token_string: str | None = None  # the trigger word; default: output_name (A1111's rule)
    init_word: str = "*"
    num_vectors_per_token: int = Field(1, ge=1, le=MAX_VECTORS)
    save_model_as: Literal["pt", "safetensors"] = "pt"

    @property
    def trigger(self) -> str:
        return self.token_string or self.output_name


class PlaceholderEmbedding(torch.nn.Module):
    """A token-embedding layer plus trained rows for the ids from `first_id` on."""

    def __init__(self, base: torch.nn.Module, vectors: torch.nn.Parameter) -> None:
        super().__init__()
        self.base = base
        self.vectors = vectors
        self.first_id = int(base.weight.shape[0])  # type: ignore[index]

    @property
    def weight(self) -> torch.Tensor:
        weight = self.base.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        new = ids >= self.first_id
        out: torch.Tensor = self.base(torch.where(new, torch.zeros_like(ids), ids))
        rows = (ids - self.first_id).clamp(0, self.vectors.shape[0] - 1)
        extra = self.vectors[rows].to(out.dtype)
        return torch.where(new.unsqueeze(-1), extra, out)


def _embeddings_module(encoder: torch.nn.Module) -> torch.nn.Module:
    for module in encoder.modules():
        if isinstance(getattr(module, "token_embedding", None), torch.nn.Embedding):
            return module
    raise ConfigError("the text encoder has no token_embedding layer to train an embedding for")


def initial_vectors(
    tokenizer: Any, token_embedding: torch.nn.Module, init_text: str, count: int
) -> torch.Tensor:
    """A1111's init: vector i = init token i*len//count's embedding; zeros for no tokens."""
    weight = token_embedding.weight
    assert isinstance(weight, torch.Tensor)
    ids = tokenizer(init_text, add_special_tokens=False).input_ids if init_text else []
    vectors = torch.zeros(count, weight.shape[1], dtype=torch.float32)
    if ids:
        for i in range(count):
            vectors[i] = weight[ids[i * len(ids) // count]].detach().float().cpu()
    return vectors


class TriggerTokens:
    """Captions -> token ids [B, 1, 77] with the trigger replaced by the placeholder ids."""

    def __init__(self, tokenizer: Any, trigger: str, placeholders: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.trigger = list(tokenizer(trigger, add_special_tokens=False).input_ids)
        if not self.trigger:
            raise ConfigError(f"the trigger word {trigger!r} has no tokens")
        self.placeholders = list(placeholders)

    def inner_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        out: list[int] = []
        i, size = 0, len(self.trigger)
        while i < len(ids):
            if ids[i : i + size] == self.trigger:
                out.extend(self.placeholders)
                i += size
            else:
                out.append(ids[i])
                i += 1
        return out

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer
        rows = []
        for text in texts:
            inner = self.inner_ids(text)[:MAX_VECTORS]
            padding = [tok.pad_token_id] * (MAX_VECTORS - len(inner))
            rows.append([tok.bos_token_id, *inner, tok.eos_token_id, *padding])
        return torch.tensor(rows, dtype=torch.long).unsqueeze(1)


class TextualInversionMethod:
    """The `engine.TrainingMethod` of textual inversion."""

    def __init__(
        self,
        model: LoadedModel,
        config: EmbeddingTrainingConfig,
        templates: Sequence[str],
        *,
        checkpoint_hash: str | None,
        checkpoint_name: str | None,
        initial: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.templates = tuple(templates)
        self.checkpoint_hash = checkpoint_hash
        self.checkpoint_name = checkpoint_name
        encoder = model.text_encoders[TEXT_ENCODER]
        self.encoder = encoder
        self._owner = _embeddings_module(encoder)
        original = self._owner.token_embedding
        assert isinstance(original, torch.nn.Module)
        self._original: torch.nn.Module = original
        tokenizer = model.tokenizers[TEXT_ENCODER]
        count = config.num_vectors_per_token
        start = initial_vectors(tokenizer, self._original, config.init_word, count)
        if initial is not None:
            start = initial.float().clone()
        self.vectors = torch.nn.Parameter(start.to(model.device))
        self._owner.token_embedding = PlaceholderEmbedding(self._original, self.vectors)
        first = int(self._original.weight.shape[0])  # type: ignore[index]
        self.tokens = TriggerTokens(tokenizer, config.trigger, range(first, first + count))
        self.captions = CaptionEncoder(
            tokenizer,
            encoder,
            final_layer_norm=encoder.get_submodule("final_layer_norm"),
            clip_skip=config.clip_skip or 1,
        )
        self.objective = ObjectiveSettings(prediction_type=model.prediction_type)
        self.alphas_cumprod = model.alphas_cumprod.to(model.device)
        self.latents = LatentSource(model, config.latent_sampling_method, config.seed or 0)
        self.last_prompt: str | None = None  # what A1111's preview draws without a prompt file

    def remove(self) -> None:
        """Put the original token-embedding layer back (the model is as it was loaded)."""
        self._owner.token_embedding = self._original

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"text_encoder": self.encoder}

    def use_prepared(self, prepared: dict[str, torch.nn.Module]) -> None:
        self.captions.encoder = prepared["text_encoder"]

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("embedding", (self.vectors,), 1.0)]  # lr 1.0 x the schedule's rate

    def set_training(self, training: bool) -> None:
        for module in self.model.modules().values():
            module.eval()  # only the vectors train; dropout-free CLIP either way

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        texts = batch_prompts(batch, self.templates, self.config.trigger, generator)
        self.last_prompt = texts[0]
        latents = self.latents(batch, generator)
        context = self.captions.encode_ids(self.tokens(texts).to(self.model.device))
        noised = noise_latents(latents, self.alphas_cumprod, self.objective, generator)
        prediction = self.model.unet(
            noised.noisy, noised.timesteps, encoder_hidden_states=context
        ).sample
        return denoising_loss(prediction, noised, self.alphas_cumprod, self.objective)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {"vectors": self.vectors.detach()}

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.vectors.copy_(tensors["vectors"].to(self.vectors.device))

    def embedding(self, step: int | None = None) -> Embedding:
        return Embedding(
            name=self.config.trigger,
            vectors={TEXT_ENCODER: self.vectors.detach().float().cpu().clone()},
            step=step,
            sd_checkpoint=self.checkpoint_hash,
            sd_checkpoint_name=self.checkpoint_name,
        )

    def save(self, path: Path, info: SaveInfo) -> None:
        layout = "safetensors" if path.suffix == ".safetensors" else "a1111"
        write_embedding(path, self.embedding(info.step), format=layout, overwrite=True)


@dataclass(frozen=True)
class EmbeddingRunResult:
    result: TrainingResult
    config_file: Path
    warnings: tuple[str, ...]


EmbeddingPreviewFactory = Callable[[LoadedModel, Callable[[], Embedding]], Preview | None]


def length_warnings(
    tokens: TriggerTokens, templates: Sequence[str], captions: Sequence[str]
) -> list[str]:
    """A warning when a template line with the longest caption exceeds 75 tokens."""
    longest = max(captions, key=len, default="")
    worst = max(
        len(tokens.inner_ids(fill_template(t, tokens_text(tokens), longest))) for t in templates
    )
    if worst > MAX_VECTORS:
        return [
            f"with {len(tokens.placeholders)} vectors the longest prompt is {worst} tokens; "
            f"CLIP reads {MAX_VECTORS}, so the end is cut off (use fewer vectors or shorter captions)"
        ]
    return []


def vector_warnings(vectors: int, images: int) -> list[str]:
    """A warning when there are more vectors than training images: each vector is fitted
    to the pictures, so more vectors need more of them (A1111's advice), or it overfits."""
    if vectors > images:
        return [
            f"{vectors} vectors per token for {images} training images: more vectors need more "
            f"pictures; use at most {images} vectors or add images"
        ]
    return []


def caption_texts(folder: Path) -> list[str]:
    """The `.txt` captions under the image folder (for the length check)."""
    return [p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*.txt")]


def tokens_text(tokens: TriggerTokens) -> str:
    text: str = tokens.tokenizer.decode(tokens.trigger)
    return text


def train_embedding(
    config: EmbeddingTrainingConfig,
    base_model: Path,
    *,
    model: LoadedModel | None = None,
    accelerator: Accelerator | None = None,
    preview_factory: EmbeddingPreviewFactory | None = None,
    hooks: Hooks | None = None,
    initial: Embedding | None = None,
) -> EmbeddingRunResult:
    """Train an embedding as `config` says on `base_model` (or the already loaded `model`,
    which is left exactly as it was). `initial` (or the file `config.weights`) continues an
    existing embedding from its own step up to `config.max_train_steps` (A1111); one already
    there is refused with a ConfigError before anything is written."""
    accelerator = accelerator or make_accelerator(config.mixed_precision)
    check_inputs(config, accelerator)
    what = f"embedding {initial.name!r}" if initial is not None else ""
    if initial is None and config.weights is not None:
        initial = read_embedding(config.weights)
        what = f"embedding {config.weights}"
    start = _check_initial(initial, config) if initial is not None else None
    start_step = file_step(initial.step) if initial is not None else 0
    config, run = prepare_run(config, accelerator, start_step=start_step, what=what)
    model = model or load_frozen_model(config, base_model, accelerator.device)
    checkpoint_hash, checkpoint_name = checkpoint_facts(base_model)
    method = TextualInversionMethod(
        model,
        config,
        run.templates,
        checkpoint_hash=checkpoint_hash,
        checkpoint_name=checkpoint_name,
        initial=start,
    )
    try:
        warnings = [
            *run.dataset.warnings,
            *vector_warnings(config.num_vectors_per_token, run.dataset.image_count),
            *length_warnings(method.tokens, run.templates, caption_texts(config.train_data_dir)),
        ]
        factory = preview_factory
        hooks, preview_warnings = attach_previews(
            hooks,
            config,
            lambda: method.last_prompt,
            None if factory is None else lambda: factory(model, method.embedding),
        )
        for message in (*warnings[len(run.dataset.warnings) :], *preview_warnings):
            logger.warning("%s", message)
        result = run_method(
            run,
            method,
            accelerator,
            optimizer=OptimizerChoice("AdamW", {"weight_decay": 0.0}),
            suffix="." + config.save_model_as,
            fingerprint={"num_vectors_per_token": config.num_vectors_per_token},
            hooks=hooks,
        )
    finally:
        method.remove()
    return EmbeddingRunResult(result, run.config_file, (*warnings, *preview_warnings))


def _check_initial(initial: Embedding, config: EmbeddingTrainingConfig) -> torch.Tensor:
    vectors = initial.vectors.get(TEXT_ENCODER)
    if vectors is None or initial.is_dual or vectors.shape[0] != config.num_vectors_per_token:
        count = "no" if vectors is None else vectors.shape[0]
        raise ConfigError(
            f"embedding {initial.name!r} has {count} vectors for this text encoder; "
            f"num_vectors_per_token is {config.num_vectors_per_token}",
            hint="set num_vectors_per_token to the embedding's count",
        )
    return vectors
