"""A1111 hypernetworks at generation: a residual MLP on the context before `to_k` and `to_v`.

In every attention module of the UNet, A1111 computes ``k = to_k(hn_k(context))`` and
``v = to_v(hn_v(context))``, with ``hn(x) = x + mlp(x) · multiplier``; the context is the text
conditioning in cross-attention (attn2) and the hidden states in self-attention (attn1), and the
(k, v) MLP pair is the one for the context's width. Several hypernetworks chain in order. `q`
is unchanged.

The input of `to_k` / `to_v` *is* that context, so each projection is wrapped in a
`HypernetworkProjection` that applies the chain and then calls the original layer, which it
keeps as `base_layer`. That is exact with every attention processor. Removing puts the very same
layer objects back. A hypernetwork with multiplier 0, or without layers for a width, leaves those
projections alone. MLPs run in the dtype and on the device of the layer they feed.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError
from brushwork.formats.hypernetwork import Hypernetwork, load_mlps, read_hypernetwork

logger = logging.getLogger(__name__)

__all__ = [
    "HypernetworkApplication",
    "HypernetworkPatcher",
    "HypernetworkProjection",
    "HypernetworkReport",
    "apply_hypernetworks",
    "load_hypernetwork_application",
]


@dataclass(frozen=True, eq=False)
class HypernetworkApplication:
    """One hypernetwork and its multiplier (`<hypernet:name:multiplier>`)."""

    hypernetwork: Hypernetwork
    multiplier: float = 1.0
    identity: Hashable | None = None  # what tells two files apart; None: the object

    @property
    def name(self) -> str:
        return self.hypernetwork.name

    def key(self) -> tuple[Hashable, ...]:
        identity = self.identity if self.identity is not None else id(self.hypernetwork)
        return (self.name, self.multiplier, identity)


def load_hypernetwork_application(
    path: Path | str, *, multiplier: float = 1.0
) -> HypernetworkApplication:
    """Read an A1111 hypernetwork `.pt` into an application identified by path + mtime."""
    path = Path(path)
    hypernetwork = read_hypernetwork(path)
    stat = path.stat()
    identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return HypernetworkApplication(hypernetwork, multiplier, identity)


class HypernetworkProjection(torch.nn.Module):
    """`to_k` / `to_v` with hypernetwork MLPs in front: ``x <- x + mlp(x) · m``, then the layer."""

    def __init__(
        self,
        base_layer: torch.nn.Module,
        mlps: Sequence[torch.nn.Module],
        multipliers: Sequence[float],
    ) -> None:
        super().__init__()
        if len(mlps) != len(multipliers):
            raise ValueError("one multiplier per MLP")
        self.base_layer = base_layer
        self.mlps = torch.nn.ModuleList(mlps)
        self.multipliers = tuple(float(m) for m in multipliers)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        for mlp, multiplier in zip(self.mlps, self.multipliers, strict=True):
            x = x + mlp(x) * multiplier
        return self.base_layer(x, *args, **kwargs)

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped layer's weight (for code that reads ``attn.to_k.weight``)."""
        weight = self.base_layer.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    @property
    def bias(self) -> torch.Tensor | None:
        bias = getattr(self.base_layer, "bias", None)
        return bias if isinstance(bias, torch.Tensor) else None


@dataclass(frozen=True)
class HypernetworkReport:
    """What one application of hypernetworks did."""

    attentions: dict[str, int] = field(default_factory=dict)  # name -> attention modules reached
    # name -> context widths of this UNet the hypernetwork has no layers for (left unchanged)
    missing_widths: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _attention_modules(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every attention module of the UNet: those with `to_q`, `to_k` and `to_v` projections."""
    return [
        (name, module)
        for name, module in unet.named_modules()
        if all(
            isinstance(getattr(module, p, None), torch.nn.Module) for p in ("to_q", "to_k", "to_v")
        )
    ]


def _projection(attn: torch.nn.Module, attr: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """`attn.to_k` / `attn.to_v` and its [out, in] weight."""
    layer = getattr(attn, attr)
    weight = getattr(layer, "weight", None)
    if not isinstance(layer, torch.nn.Module) or not isinstance(weight, torch.Tensor):
        raise ConfigError(f"cannot apply a hypernetwork before {attr}: it has no weight")
    if weight.dim() != 2:
        raise ConfigError(f"cannot apply a hypernetwork before {attr}: not a Linear")
    return layer, weight


class _MlpCache:
    """Each (hypernetwork, width, device, dtype) MLP pair built once and shared by every layer."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, int, torch.device, torch.dtype], tuple[Any, Any]] = {}

    def pair(
        self, index: int, hn: Hypernetwork, width: int, weight: torch.Tensor
    ) -> tuple[torch.nn.Module, torch.nn.Module]:
        key = (index, width, weight.device, weight.dtype)
        if key not in self._pairs:
            k, v = load_mlps(hn, width)
            for mlp in (k, v):
                mlp.to(device=weight.device, dtype=weight.dtype).requires_grad_(False)
            self._pairs[key] = (k, v)
        return self._pairs[key]


class _Wrapped:
    """The projections replaced, so they can be put back as the same objects."""

    def __init__(self) -> None:
        self.originals: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def replace(self, owner: torch.nn.Module, attr: str, new: torch.nn.Module) -> None:
        self.originals.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, new)

    def restore(self) -> None:
        for owner, attr, original in reversed(self.originals):
            setattr(owner, attr, original)
        self.originals.clear()


def _wrap(
    unet: torch.nn.Module, applications: Sequence[HypernetworkApplication], wrapped: _Wrapped
) -> HypernetworkReport:
    active = [(i, app) for i, app in enumerate(applications) if app.multiplier != 0]
    counts = {app.name: 0 for app in applications}
    missing: dict[str, set[int]] = {app.name: set() for app in applications}
    cache = _MlpCache()
    for name, attn in _attention_modules(unet):
        if any(isinstance(getattr(attn, p), HypernetworkProjection) for p in ("to_k", "to_v")):
            raise ConfigError(f"{name} already has a hypernetwork applied; remove it first")
        (to_k, weight), (to_v, _) = _projection(attn, "to_k"), _projection(attn, "to_v")
        width = int(weight.shape[1])
        k_mlps, v_mlps, multipliers = [], [], []
        for index, app in active:
            if width not in app.hypernetwork.layers:
                missing[app.name].add(width)
                continue
            k, v = cache.pair(index, app.hypernetwork, width, weight)
            k_mlps.append(k)
            v_mlps.append(v)
            multipliers.append(app.multiplier)
            counts[app.name] += 1
        if multipliers:
            wrapped.replace(attn, "to_k", HypernetworkProjection(to_k, k_mlps, multipliers))
            wrapped.replace(attn, "to_v", HypernetworkProjection(to_v, v_mlps, multipliers))
    report = HypernetworkReport(counts, {n: tuple(sorted(w)) for n, w in missing.items()})
    for hn_name, widths in report.missing_widths.items():
        if widths:
            logger.info("hypernetwork %s has no layers for widths %s", hn_name, list(widths))
    return report


@contextmanager
def apply_hypernetworks(
    unet: torch.nn.Module, applications: Sequence[HypernetworkApplication]
) -> Iterator[HypernetworkReport]:
    """Apply the hypernetworks (chained in this order) for the `with` block; remove them on exit."""
    wrapped = _Wrapped()
    try:
        yield _wrap(unet, applications, wrapped)
    finally:
        wrapped.restore()


class HypernetworkPatcher:
    """Keeps a set of hypernetworks applied between generations; re-wraps only on a change."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self._unet = unet
        self._wrapped = _Wrapped()
        self._key: tuple[tuple[Hashable, ...], ...] = ()
        self._report = HypernetworkReport()

    @property
    def report(self) -> HypernetworkReport:
        return self._report

    def apply(self, applications: Sequence[HypernetworkApplication]) -> HypernetworkReport:
        key = tuple(app.key() for app in applications)
        if key == self._key:
            return self._report
        self.remove()
        try:
            self._report = _wrap(self._unet, applications, self._wrapped)
        except BaseException:
            self._wrapped.restore()
            raise
        self._key = key
        return self._report

    def remove(self) -> None:
        """Put every original `to_k` / `to_v` back (the same objects)."""
        self._wrapped.restore()
        self._key, self._report = (), HypernetworkReport()

    def __enter__(self) -> HypernetworkPatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
