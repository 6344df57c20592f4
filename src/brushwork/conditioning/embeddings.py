"""Textual-inversion embeddings by trigger word, and finding them in tokenized prompts.

As in A1111 (`modules/textual_inversion/textual_inversion.py`): the trigger word is the file stem;
an embedding whose widths do not fit the model is kept aside as *skipped* (with the reason) rather
than refused; triggers are matched on token ids, so the CLIP tokenizer's lowercasing makes the
match case-insensitive, and a trigger that is an ordinary word (``one``) works. The tokenizer's
vocabulary is never touched. Among triggers that match at one place, the longest (in tokens) wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from brushwork.core.arch import family_facts, skeleton_config
from brushwork.core.errors import ModelFileError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.embedding import Embedding, read_embedding

if TYPE_CHECKING:
    from brushwork.conditioning.chunks import Tokenize
    from brushwork.loading.model import LoadedModel

logger = logging.getLogger(__name__)

MAX_VECTORS = 75  # an embedding never straddles chunks, so it must fit in one


def family_widths(family: BaseFamily) -> dict[str, int]:
    """Width of each text encoder of a standard model of `family` (SD1: CLIP-L 768, ...)."""
    facts = family_facts(family)
    return {
        name: int(skeleton_config(facts.skeleton, name)["hidden_size"])
        for name in facts.text_encoders
    }


def model_widths(model: LoadedModel) -> dict[str, int]:
    """Width of each text encoder of a loaded model (tiny test models included)."""
    return {name: int(te.config.hidden_size) for name, te in model.text_encoders.items()}


def incompatibility(embedding: Embedding, widths: Mapping[str, int]) -> str | None:
    """Why `embedding` cannot be used with text encoders of these widths, or None."""
    have = {name: int(v.shape[-1]) for name, v in embedding.vectors.items()}
    if have != dict(widths):
        if set(have) != set(widths):
            kind = "an SDXL (clip_l + clip_g)" if embedding.is_dual else "a single-encoder"
            return (
                f"{kind} embedding of width {embedding.width}; this model needs {_describe(widths)}"
            )
        return f"width {_describe(have)}; this model needs {_describe(widths)}"
    if embedding.num_vectors > MAX_VECTORS:
        return f"{embedding.num_vectors} vectors; at most {MAX_VECTORS} fit in a prompt chunk"
    return None


def _describe(widths: Mapping[str, int]) -> str:
    if len(widths) == 1:
        return str(next(iter(widths.values())))
    return " + ".join(str(w) for w in widths.values())


@dataclass
class EmbeddingDatabase:
    """Usable embeddings by trigger word (`loaded`), the others with the reason (`skipped`).

    `sources` gives the file of each one read from a file (for hashes in infotext).
    """

    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_files(
        cls,
        paths: Iterable[Path],
        *,
        family: BaseFamily,
        widths: Mapping[str, int] | None = None,
    ) -> EmbeddingDatabase:
        """Read every file; those that cannot be read or do not fit are `skipped`, not raised.

        `widths` (text-encoder name -> width) defaults to the standard models of `family`.
        """
        database = cls()
        expected = dict(widths) if widths is not None else family_widths(BaseFamily(family))
        for path in paths:
            path = Path(path)
            try:
                embedding = read_embedding(path)
            except ModelFileError as error:
                logger.warning("embedding %s not loaded: %s", path, error)
                database.skipped[path.stem] = str(error)
                database.sources[path.stem] = path
                continue
            database.add(embedding, expected, source=path)
        return database

    @classmethod
    def for_model(cls, paths: Iterable[Path], model: LoadedModel) -> EmbeddingDatabase:
        """`from_files` with the widths of `model`'s own text encoders."""
        return cls.from_files(paths, family=model.family, widths=model_widths(model))

    @classmethod
    def from_embeddings(
        cls, embeddings: Iterable[Embedding], *, widths: Mapping[str, int]
    ) -> EmbeddingDatabase:
        """A database of embeddings already read (bundled in a LoRA, made in training, tests)."""
        database = cls()
        for embedding in embeddings:
            database.add(embedding, widths)
        return database

    def add(
        self, embedding: Embedding, widths: Mapping[str, int], *, source: Path | None = None
    ) -> bool:
        """Add one embedding under its name; False when it does not fit (then it is `skipped`)
        or when an embedding of that name is already loaded (the first one stays)."""
        name = embedding.name
        if name in self.loaded:
            logger.warning("embedding %r from %s ignored: one of that name is loaded", name, source)
            return False
        reason = incompatibility(embedding, widths)
        if reason is not None:
            logger.info("embedding %r skipped: %s", name, reason)
            self.skipped.setdefault(name, reason)
            if source is not None:
                self.sources.setdefault(name, source)
            return False
        self.loaded[name] = embedding
        self.skipped.pop(name, None)
        if source is not None:
            self.sources[name] = source
        return True


class EmbeddingMatcher:
    """Finds embedding triggers in a token-id sequence (built once per tokenizer)."""

    def __init__(self, embeddings: Iterable[Embedding], tokenize: Tokenize) -> None:
        embeddings = list(embeddings)
        names = [embedding.name for embedding in embeddings]
        by_first: dict[int, list[tuple[tuple[int, ...], Embedding]]] = {}
        for ids, embedding in zip(tokenize(names) if names else [], embeddings, strict=True):
            if not ids:
                logger.warning(
                    "embedding %r: its name has no tokens; it cannot be used", embedding.name
                )
                continue
            by_first.setdefault(ids[0], []).append((tuple(ids), embedding))
        for candidates in by_first.values():
            candidates.sort(key=lambda item: len(item[0]), reverse=True)  # stable: first stays
        self._by_first = by_first

    def __call__(self, tokens: Sequence[int], position: int) -> tuple[Embedding, int] | None:
        """The embedding whose trigger starts at `position`, and its length in tokens."""
        for ids, embedding in self._by_first.get(tokens[position], ()):
            if tuple(tokens[position : position + len(ids)]) == ids:
                return embedding, len(ids)
        return None
