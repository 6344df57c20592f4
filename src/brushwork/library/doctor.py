"""A health check of a library: what a user should fix, each finding with the files concerned.

Findings, by category:

* ``invalid``: files in model folders that are not usable models (with the reason);
* ``misfiled``: models in another kind's folder;
* ``duplicate``: the same bytes (full SHA-256) stored more than once (hard or symbolic links to
  one file are not copies, and are not reported);
* ``name-clash``: two LoRA, embeddings or hypernetworks with one name, or two VAEs with one
  file name: A1111 keeps only one of them;
* ``orphan-sidecar``: a preview, .json, .txt, .civitai.info, .yaml or .optim with no model of its
  name beside it;
* ``warning``: any other problem of an entry (a sidecar that does not parse, a LoRA with key
  names A1111 cannot load, ...);
* ``unreadable-folder``: a folder the scan could not open.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from brushwork.core.kinds import ModelKind
from brushwork.library.catalog import HashProgress, Library, LibraryScan
from brushwork.library.entry import ModelEntry
from brushwork.library.problems import misfiled_problem
from brushwork.library.walk import display_name

# kinds A1111 identifies by file stem (VAEs: by file name, extension included)
_NAMED_BY_STEM = (ModelKind.LORA, ModelKind.EMBEDDING, ModelKind.HYPERNETWORK)


@dataclass(frozen=True)
class Finding:
    category: str
    message: str
    paths: tuple[str, ...]  # the files concerned, printable, relative to their root


@dataclass(frozen=True)
class DoctorReport:
    checked: int  # model files looked at
    findings: tuple[Finding, ...]

    @property
    def healthy(self) -> bool:
        return not self.findings


def _where(entry: ModelEntry) -> str:
    return f"{entry.display_path} (in {display_name(str(entry.root))})"


def _entry_findings(entry: ModelEntry) -> list[Finding]:
    where = (_where(entry),)
    if entry.kind is None:
        return [Finding("invalid", entry.identity.error or "not a usable model", where)]
    misfiled = misfiled_problem(entry)
    findings = [Finding("misfiled", misfiled, where)] if misfiled else []
    findings += [Finding("warning", p, where) for p in entry.problems if p != misfiled]
    return findings


def _duplicates(entries: Sequence[ModelEntry]) -> list[Finding]:
    by_hash: dict[str, list[ModelEntry]] = defaultdict(list)
    for entry in entries:
        if entry.sha256 is not None:
            by_hash[entry.sha256].append(entry)
    findings = []
    for sha256, group in by_hash.items():
        copies = {entry.file_id for entry in group}
        if len(group) < 2 or len(copies) < 2:
            continue
        size = group[0].size or 0
        wasted = size * (len(copies) - 1)
        findings.append(
            Finding(
                "duplicate",
                f"{len(copies)} copies of the same file (sha256 {sha256[:10]}); "
                f"{wasted / 2**20:.1f} MiB could be freed",
                tuple(_where(e) for e in group),
            )
        )
    return findings


def _name_clashes(entries: Sequence[ModelEntry]) -> list[Finding]:
    by_name: dict[tuple[ModelKind, str], list[ModelEntry]] = defaultdict(list)
    for entry in entries:
        if entry.kind in _NAMED_BY_STEM and not entry.is_misfiled:
            by_name[(entry.kind, entry.name)].append(entry)
        elif entry.kind is ModelKind.VAE and not entry.is_misfiled:
            by_name[(entry.kind, entry.path.name)].append(entry)
    return [
        Finding(
            "name-clash",
            f"{len(group)} {kind} files are named {display_name(name)!r}; A1111 uses only one "
            "of them: rename the others",
            tuple(_where(e) for e in group),
        )
        for (kind, name), group in by_name.items()
        if len({e.file_id for e in group}) > 1
    ]


def diagnose(scan: LibraryScan) -> DoctorReport:
    """Findings for a scan; hash its entries first (`Library.hash_entries`) to find duplicates."""
    findings: list[Finding] = []
    for entry in scan.entries:
        findings += _entry_findings(entry)
    findings += _duplicates(scan.entries)
    findings += _name_clashes(scan.entries)
    findings += [
        Finding(
            "orphan-sidecar",
            f"no model named {display_name(orphan.owner)!r} beside it",
            (f"{display_name(orphan.path.relative_to(orphan.root).as_posix())}",),
        )
        for orphan in scan.orphan_sidecars
    ]
    findings += [
        Finding("unreadable-folder", error, (display_name(str(path)),))
        for path, error in scan.folder_errors
    ]
    return DoctorReport(len(scan.entries), tuple(findings))


def check_library(library: Library, progress: HashProgress | None = None) -> DoctorReport:
    """Scan, hash (cached) and diagnose `library`."""
    scan = library.scan()
    hashed = library.hash_entries(scan.entries, progress)
    return diagnose(replace(scan, entries=tuple(hashed)))
