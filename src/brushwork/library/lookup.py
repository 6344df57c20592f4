"""Finding one model by what a user types: a name, an alias, a path or a hash.

In order: A1111's title form ``name [hash]``; a path, relative to the root or to the model
folder, with or without its extension (``/`` or ``\\``); the file stem, as A1111 resolves
``<lora:name:1>``; a LoRA's alias (``ss_output_name``); a hash (full or short sha256,
AutoV2, the legacy 8-hex hash, a LoRA's tensor hash); finally the stem or alias ignoring case.
Several matches at one step are an `AmbiguousModelError` listing them; none at all is a
`ModelNotFoundError` with the closest names (difflib).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence

from brushwork.core.kinds import ModelKind
from brushwork.library.entry import ModelEntry
from brushwork.library.errors import AmbiguousModelError, ModelNotFoundError

_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
_TITLE = re.compile(r"^(?P<name>.+?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")
SUGGESTION_COUNT = 5

Matcher = Callable[[ModelEntry], bool]


def looks_like_hash(query: str) -> bool:
    return bool(_HEX.match(query))


def hash_matches(entry: ModelEntry, query: str) -> bool:
    """Whether `query` (8 to 64 hex digits) is one of the entry's hashes or a prefix of one."""
    wanted = query.lower()
    if entry.identity.legacy_hash == wanted:
        return True
    training = entry.identity.training
    hashes = (entry.sha256, entry.addnet_hash, training.tensor_hash if training else None)
    return any(h is not None and h.startswith(wanted) for h in hashes)


def _path_forms(entry: ModelEntry) -> set[str]:
    in_folder = entry.relative_path.removeprefix(entry.folder + "/")
    forms = {entry.relative_path, in_folder}
    return forms | {form.rsplit(".", 1)[0] for form in forms}


def _describe(entry: ModelEntry) -> str:
    return f"{entry.display_path} ({entry.kind_label}, in {entry.root})"


def _unique(query: str, entries: Sequence[ModelEntry], matcher: Matcher) -> ModelEntry | None:
    found = [entry for entry in entries if matcher(entry)]
    if len(found) > 1:
        raise AmbiguousModelError(query, tuple(_describe(entry) for entry in found))
    return found[0] if found else None


def _steps(query: str) -> list[Matcher]:
    path_query = query.replace("\\", "/").strip("/")
    folded = query.casefold()
    steps: list[Matcher] = [
        lambda e: path_query in _path_forms(e),
        lambda e: e.name == query,
        lambda e: e.alias == query,
    ]
    if looks_like_hash(query):
        steps.append(lambda e: hash_matches(e, query))
    steps.append(lambda e: e.name.casefold() == folded or (e.alias or "").casefold() == folded)
    return steps


def find_model(
    entries: Sequence[ModelEntry], query: str, *, kind: ModelKind | None = None
) -> ModelEntry:
    """The one entry `query` names (see the module docstring). `kind` narrows the search."""
    query = query.strip()
    pool = [entry for entry in entries if kind is None or entry.kind is kind]
    title = _TITLE.match(query)
    if title:
        name, wanted = title.group("name"), title.group("hash")
        titled = [e for e in pool if wanted and hash_matches(e, wanted)]
        for matcher in _steps(name)[:-1]:
            found = _unique(query, titled, matcher)
            if found is not None:
                return found
    for matcher in _steps(query):
        found = _unique(query, pool, matcher)
        if found is not None:
            return found
    raise _not_found(entries, pool, query, kind)


def _not_found(
    entries: Sequence[ModelEntry], pool: Sequence[ModelEntry], query: str, kind: ModelKind | None
) -> ModelNotFoundError:
    names = sorted({e.name for e in pool} | {e.alias for e in pool if e.alias})
    suggestions = tuple(difflib.get_close_matches(query, names, n=SUGGESTION_COUNT, cutoff=0.6))
    detail = ""
    if kind is not None:
        elsewhere = [e for e in entries if e.name == query and e.kind is not kind]
        others = ", ".join(f"{e.display_path} ({e.kind_label})" for e in elsewhere)
        detail = f" among {kind} models" + (
            f"; other models of that name: {others}" if others else ""
        )
    return ModelNotFoundError(query, suggestions, detail=detail)
