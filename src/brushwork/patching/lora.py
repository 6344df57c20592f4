"""LoRA at generation: merged into the weights for a generation, restored bit for bit afterwards.

Several LoRAs at once, each with a text-encoder and a UNet multiplier (A1111's
``<lora:name:te:unet>``; the UNet multiplier defaults to the TE one). Every module of every
network (LoRA, LoCon convs, LoHa, LoKr, full diffs, DoRA; any key family `formats.lora` reads)
adds ``multiplier · ΔW`` to its layer, where ΔW already holds the ``alpha / rank`` scale. Per
layer the sum is formed in float32 and rounded once to the weight's dtype, so there is no cost
per sampling step. Only the tensors touched are backed up (exact copies, on the CPU by default
as in A1111) and copied back on restore: the same tensor objects, the same bits.

Two faces:

* `apply_loras(...)`, a context manager for one generation;
* `LoraPatcher`, which keeps a set applied between generations and re-patches only when the set
  (names, multipliers, file identity) changes, restoring first, as A1111 does.

Component names are those of `LoraModule.target`: ``unet``, ``text_encoder``, ``text_encoder_2``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brushwork.formats.lora import LoraNetwork, read_lora
from brushwork.patching._lora_merge import (
    Unmatched,
    WeightBackup,
    check_family,
    merge_layer,
    plan,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LoraApplication",
    "LoraPatcher",
    "LoraReport",
    "Unmatched",
    "apply_loras",
    "load_lora_application",
]


@dataclass(frozen=True, eq=False)
class LoraApplication:
    """One LoRA to apply, with its strengths."""

    network: LoraNetwork
    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float | None = None  # None: the TE multiplier, as A1111
    identity: Hashable | None = (
        None  # what tells two files apart (path, size, mtime); None: the object
    )

    @property
    def effective_unet_multiplier(self) -> float:
        return self.te_multiplier if self.unet_multiplier is None else self.unet_multiplier

    def key(self) -> tuple[Hashable, ...]:
        """What `LoraPatcher` compares to decide whether a set changed."""
        identity = self.identity if self.identity is not None else id(self.network)
        return (self.name, self.te_multiplier, self.effective_unet_multiplier, identity)


def load_lora_application(
    path: Path | str,
    *,
    name: str | None = None,
    te_multiplier: float = 1.0,
    unet_multiplier: float | None = None,
    unet_config: dict[str, Any] | None = None,
) -> LoraApplication:
    """Read a LoRA file into an application named after its stem, identified by path + mtime."""
    path = Path(path)
    network = read_lora(path, unet_config=unet_config)
    stat = path.stat()
    return LoraApplication(
        network,
        name or path.stem,
        te_multiplier,
        unet_multiplier,
        identity=(str(path.resolve()), stat.st_size, stat.st_mtime_ns),
    )


@dataclass(frozen=True)
class LoraReport:
    """What one application of a set of LoRAs did."""

    applied: Mapping[str, Mapping[str, int]]  # LoRA name -> component -> modules merged
    unmatched: tuple[Unmatched, ...] = ()  # modules whose layer is missing or of another shape
    unread_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # keys not understood

    @property
    def per_component(self) -> dict[str, int]:
        """Modules merged per component, all LoRAs together (a layer two LoRAs patch counts 2)."""
        total: Counter[str] = Counter()
        for counts in self.applied.values():
            total.update(counts)
        return dict(total)

    @property
    def modules_applied(self) -> int:
        return sum(self.per_component.values())


EMPTY_REPORT = LoraReport(applied={})


def _patch(
    applications: Sequence[LoraApplication],
    unet: torch.nn.Module | None,
    text_encoders: Mapping[str, torch.nn.Module],
    backup: WeightBackup,
) -> LoraReport:
    for app in applications:
        check_family(app.name, app.network, unet, text_encoders)
    entries = [
        (app.name, app.network, app.te_multiplier, app.effective_unet_multiplier)
        for app in applications
    ]
    layers, unmatched = plan(entries, unet, text_encoders)
    applied: dict[str, Counter[str]] = {app.name: Counter() for app in applications}
    try:
        for patch in layers:
            fitted, missed = merge_layer(patch, backup)
            unmatched.extend(missed)
            for name in fitted:
                applied[name][patch.component] += 1
    except BaseException:
        backup.restore()
        raise
    report = LoraReport(
        applied={name: dict(counts) for name, counts in applied.items()},
        unmatched=tuple(unmatched),
        unread_keys={app.name: tuple(app.network.unmatched) for app in applications},
    )
    _log(report)
    return report


def _log(report: LoraReport) -> None:
    for miss in report.unmatched:
        logger.warning("LoRA %s: %s patched nothing: %s", miss.lora, miss.target, miss.reason)
    for name, keys in report.unread_keys.items():
        if keys:
            logger.warning("LoRA %s: %d keys not understood, e.g. %s", name, len(keys), keys[0])
    logger.info("LoRA modules merged: %s", report.per_component)


@contextmanager
def apply_loras(
    *,
    unet: torch.nn.Module | None = None,
    text_encoders: Mapping[str, torch.nn.Module] | None = None,
    applications: Sequence[LoraApplication],
    backup_device: torch.device | str | None = "cpu",
) -> Iterator[LoraReport]:
    """Merge `applications` into the modules for the `with` block; restore them on exit.

    `backup_device=None` keeps the backups beside the weights (faster restore on a GPU, more
    GPU memory). Raises `IncompatibleModelError` before touching anything when a LoRA is for
    another base family.
    """
    backup = WeightBackup(backup_device)
    report = _patch(applications, unet, dict(text_encoders or {}), backup)
    try:
        yield report
    finally:
        backup.restore()


class LoraPatcher:
    """Keeps a set of LoRAs merged into one model between generations.

    `apply` is cheap when the set is unchanged; when it changed, the weights are restored first
    and the new set merged. `restore` leaves the model as it was. The patcher is bound to the
    module objects it was given: restore before loading other weights into them.
    """

    def __init__(
        self,
        *,
        unet: torch.nn.Module | None = None,
        text_encoders: Mapping[str, torch.nn.Module] | None = None,
        backup_device: torch.device | str | None = "cpu",
    ) -> None:
        self._unet = unet
        self._text_encoders = dict(text_encoders or {})
        self._backup = WeightBackup(backup_device)
        self._applied: tuple[LoraApplication, ...] = ()
        self._key: tuple[tuple[Hashable, ...], ...] = ()
        self._report = EMPTY_REPORT
        self.patch_count = 0  # how many times a set was merged (not counting unchanged calls)

    @property
    def applied(self) -> tuple[LoraApplication, ...]:
        return self._applied

    @property
    def report(self) -> LoraReport:
        return self._report

    def apply(self, applications: Sequence[LoraApplication]) -> LoraReport:
        """Make `applications` the merged set (in this order); a no-op when nothing changed."""
        key = tuple(app.key() for app in applications)
        if key == self._key:
            return self._report
        self.restore()
        if applications:
            self._report = _patch(applications, self._unet, self._text_encoders, self._backup)
            self.patch_count += 1
        self._applied, self._key = tuple(applications), key
        return self._report

    def restore(self) -> None:
        """Put back every weight the current set changed, bit for bit."""
        self._backup.restore()
        self._applied, self._key, self._report = (), (), EMPTY_REPORT

    def __enter__(self) -> LoraPatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
