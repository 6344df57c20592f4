"""`project best`: which checkpoint (epoch) and which LoRA weight to use, and why.

Two ways, by what can be measured honestly:

* **Quality** (a shapes-world project, whose concept is known: a held-out shape and its trigger
  word). Every checkpoint at every weight is measured (a `Scorer`; `projects.shapes_quality`
  draws with the demo probe): *adoption*, the share of trigger-word pictures that show the
  shape, and *preservation*, the prompt adherence on the base prompts with the LoRA applied.
  The rule: among the candidates that keep at least 90% of the base model's adherence
  (`preservation >= 0.9 x base`), the highest adoption wins; ties go to the lower weight, then
  to the earlier epoch (the least change that teaches as much). When no candidate keeps 90%,
  the one that keeps the most adherence is named (ties: higher adoption, lower weight, earlier
  epoch), and the report says the rule was not met.
* **Loss** (any other dataset). The training loss is all there is: for each saved epoch, the
  smoothed loss when it was saved (kohya's moving average over an epoch's steps, the CSV's
  `avr_loss` at the epoch's last step); the lowest names the epoch (ties: the earlier). A lower
  loss means the LoRA fits its pictures more closely, not that it draws better, and it says
  nothing about the weight: the preview grid (`project preview`) decides.

When the chosen candidate draws the shape no more often than the base model, the report says
the LoRA has not learned the concept.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brushwork.core.errors import ConfigError
from brushwork.generation.xyz_epochs import EpochFile
from brushwork.projects.preview import checkpoint_files
from brushwork.projects.project import Project, Version
from brushwork.projects.records import Concept

PRESERVATION_KEPT = 0.9
TOLERANCE = 1e-9  # shares are counts over a total: 0.72 keeps 90% of 0.8 despite rounding
QUALITY = "shapes-quality"
LOSS = "loss"


@dataclass(frozen=True)
class Candidate:
    """One checkpoint at one weight. `order`: the checkpoint's place (earlier epochs first)."""

    file: Path
    epoch: int | None
    strength: float
    order: int

    @property
    def label(self) -> str:
        return self.file.name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Measurement:
    """Shares in [0, 1]: the concept's adoption and the base prompts' adherence."""

    adoption: float
    preservation: float
    detail: dict[str, Any] = field(default_factory=dict)


Scorer = Callable[[Candidate | None], Measurement]  # None: the base model, no LoRA


@dataclass(frozen=True)
class BestReport:
    """The answer of `project best` (`to_json` is what `--json` prints)."""

    project: str
    version: str
    method: str
    epoch: int | None
    file: Path | None
    strength: float | None
    meets_rule: bool
    reason: str
    rows: tuple[dict[str, Any], ...]
    base: Measurement | None = None
    threshold: float | None = None
    concept: Concept | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "version": self.version,
            "method": self.method,
            "epoch": self.epoch,
            "file": None if self.file is None else str(self.file),
            "strength": self.strength,
            "meets_rule": self.meets_rule,
            "reason": self.reason,
            "concept": None if self.concept is None else self.concept.model_dump(),
            "base": None
            if self.base is None
            else {"adoption": self.base.adoption, "preservation": self.base.preservation},
            "preservation_threshold": self.threshold,
            "rows": list(self.rows),
        }

    def text_lines(self) -> list[str]:
        """The report as `project best` prints it."""
        weight = "decide from the preview grid" if self.strength is None else f"{self.strength:g}"
        name = self.file.name if self.file is not None else "?"
        lines = [f"{self.project} {self.version}: epoch {self.epoch} ({name}), weight {weight}"]
        lines.append(f"why: {self.reason}")
        if self.base is not None and self.threshold is not None:
            lines.append(
                f"base model: adoption {self.base.adoption:.0%}, adherence "
                f"{self.base.preservation:.0%} (keep >= {self.threshold:.0%})"
            )
        return lines + [_row_text(row) for row in self.rows]


def _row_text(row: dict[str, Any]) -> str:
    if "adoption" not in row:
        return f"  {row['file']} (epoch {row['epoch']}): smoothed loss {row['smoothed_loss']:.4g}"
    mark = "" if row["keeps_preservation"] else "  (loses adherence)"
    return (
        f"  {row['file']} @ {row['strength']:g}: adoption {row['adoption']:.0%}, "
        f"preservation {row['preservation']:.0%}{mark}"
    )


def candidates(
    files: Sequence[EpochFile], strengths: Sequence[float], final_epoch: int | None
) -> list[Candidate]:
    """Every file at every strength; the final file's epoch is the run's last."""
    if not strengths:
        raise ConfigError("no weights to measure", hint="e.g. --weights 0.6,0.8,1.0")
    found = []
    for order, item in enumerate(files):
        epoch = item.epoch if item.epoch is not None else (final_epoch if item.is_final else None)
        found += [Candidate(item.path, epoch, float(s), order) for s in strengths]
    return found


def keeps(measurement: Measurement, threshold: float) -> bool:
    return measurement.preservation >= threshold - TOLERANCE


def choose_by_quality(
    base: Measurement,
    measured: Sequence[tuple[Candidate, Measurement]],
    keep: float = PRESERVATION_KEPT,
) -> tuple[Candidate, Measurement, bool]:
    """The rule of the module docstring: (the choice, its measurement, whether it met it)."""
    if not measured:
        raise ConfigError("nothing was measured, so nothing can be chosen")
    threshold = keep * base.preservation
    kept = [pair for pair in measured if keeps(pair[1], threshold)]
    if kept:
        chosen = min(kept, key=lambda p: (-p[1].adoption, p[0].strength, p[0].order))
        return chosen[0], chosen[1], True
    chosen = min(
        measured,
        key=lambda p: (-p[1].preservation, -p[1].adoption, p[0].strength, p[0].order),
    )
    return chosen[0], chosen[1], False


def _row(candidate: Candidate, measurement: Measurement, threshold: float) -> dict[str, Any]:
    return {
        "file": candidate.file.name,
        "epoch": candidate.epoch,
        "strength": candidate.strength,
        "adoption": round(measurement.adoption, 4),
        "preservation": round(measurement.preservation, 4),
        "keeps_preservation": keeps(measurement, threshold),
        **({"detail": measurement.detail} if measurement.detail else {}),
    }


def best_by_quality(
    project: Project,
    version: Version,
    scorer: Scorer,
    strengths: Sequence[float],
    concept: Concept,
) -> BestReport:
    """Measure every checkpoint x weight with `scorer` and choose by the rule."""
    files = checkpoint_files(project, version)
    base = scorer(None)
    measured = [(c, scorer(c)) for c in candidates(files, strengths, version.record.epochs)]
    chosen, measurement, met = choose_by_quality(base, measured)
    threshold = PRESERVATION_KEPT * base.preservation
    where = f"epoch {chosen.epoch}" if chosen.epoch is not None else chosen.label
    if met:
        reason = (
            f"{chosen.label} ({where}) at weight {chosen.strength:g}: the highest adoption of "
            f"{concept.shape!r} under {concept.trigger!r} ({measurement.adoption:.0%}) among the "
            f"candidates that keep at least {PRESERVATION_KEPT:.0%} of the base model's prompt "
            f"adherence ({measurement.preservation:.0%} >= {threshold:.0%}); ties go to the lower "
            "weight, then the earlier epoch"
        )
    else:
        reason = (
            f"no candidate keeps {PRESERVATION_KEPT:.0%} of the base model's adherence "
            f"({base.preservation:.0%}); {chosen.label} ({where}) at weight "
            f"{chosen.strength:g} keeps the most ({measurement.preservation:.0%}, adoption "
            f"{measurement.adoption:.0%}): train with a lower learning rate or fewer steps"
        )
    if measurement.adoption <= base.adoption:
        reason += (
            f". Note: it draws {concept.shape!r} no more often than the base model does "
            f"({base.adoption:.0%}): the LoRA has not learned the concept; train longer or with "
            "a higher learning rate"
        )
    return BestReport(
        project=project.name,
        version=version.name,
        method=QUALITY,
        epoch=chosen.epoch,
        file=chosen.file,
        strength=chosen.strength,
        meets_rule=met,
        reason=reason,
        rows=tuple(_row(c, m, threshold) for c, m in measured),
        base=base,
        threshold=round(threshold, 4),
        concept=concept,
    )


def smoothed_loss_by_epoch(csv_path: Path) -> dict[int, float]:
    """The CSV's `avr_loss` at the last step of each epoch."""
    try:
        with csv_path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read the loss log {csv_path}: {exc}") from None
    by_epoch: dict[int, float] = {}
    for row in rows:
        try:
            by_epoch[int(row["epoch"])] = float(row["avr_loss"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{csv_path} is not a brushwork loss log (step,epoch,loss,avr_loss)"
            ) from None
    return by_epoch


def best_by_loss(project: Project, version: Version) -> BestReport:
    """The saved epoch with the lowest smoothed loss (see the module docstring)."""
    files = checkpoint_files(project, version)
    recorded = version.record.files.loss_csv
    if recorded is None:
        raise ConfigError(f"{project.name} {version.name} has no loss log", hint="train it first")
    losses = smoothed_loss_by_epoch(version.layout.absolute(recorded))
    saved = [
        (c.epoch, c) for c in candidates(files, (1.0,), version.record.epochs) if c.epoch in losses
    ]
    if not saved:
        raise ConfigError(f"{project.name} {version.name}: no saved checkpoint has a logged epoch")
    epoch, chosen = min(saved, key=lambda pair: (losses[pair[0] or 0], pair[1].order))
    assert epoch is not None
    rows = tuple(
        {"file": c.file.name, "epoch": e, "smoothed_loss": round(losses[e or 0], 6)}
        for e, c in saved
    )
    reason = (
        f"{chosen.label} (epoch {epoch}) has the lowest smoothed training loss "
        f"({losses[epoch]:.4g}, kohya's moving average over an epoch's steps, when it was saved). "
        "This is not a shapes-world project, so nothing measures what the LoRA draws: a lower "
        "loss means it fits its pictures more closely, not that it draws better (an overfitted "
        "LoRA has the lowest loss), and the loss says nothing about the weight. Decide by eye "
        "with the checkpoint x weight grid of `brushwork project preview`."
    )
    return BestReport(
        project=project.name,
        version=version.name,
        method=LOSS,
        epoch=epoch,
        file=chosen.file,
        strength=None,
        meets_rule=True,
        reason=reason,
        rows=rows,
        concept=project.record.concept,
    )
