"""Errors of the model library: a name that matches no model, or more than one."""

from __future__ import annotations

from brushwork.core.errors import BrushworkError


class ModelNotFoundError(BrushworkError):
    """No model in the library answers to a name, path or hash."""

    def __init__(self, query: str, suggestions: tuple[str, ...] = (), *, detail: str = "") -> None:
        self.query = query
        self.suggestions = suggestions
        hint = (
            f"did you mean {', '.join(repr(s) for s in suggestions)}?"
            if suggestions
            else "`brushwork models list` shows what the library holds"
        )
        super().__init__(f"no model named {query!r} in the library{detail}", hint=hint)


class AmbiguousModelError(BrushworkError):
    """A name matches several models; the caller must say which one."""

    def __init__(self, query: str, candidates: tuple[str, ...]) -> None:
        self.query = query
        self.candidates = candidates
        super().__init__(
            f"{query!r} matches {len(candidates)} models: {'; '.join(candidates)}",
            hint="name one by its path (relative to its root) or by its hash",
        )
