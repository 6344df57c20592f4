"""What the faces show of a project: its record, its dataset's shape and its versions, as JSON.

`project_summary` is what `brushwork project show --json` prints and the server's
`GET /brushwork/v1/projects/{name}` returns; `list_summary` is one line of `project list`.
"""

from __future__ import annotations

from typing import Any

from brushwork.datasets.captions import read_captions
from brushwork.datasets.tag_edit import tag_counts
from brushwork.projects.project import Project, Version
from brushwork.training.data.spec import IMAGE_EXTENSIONS, parse_folder_name


def subsets(project: Project) -> list[dict[str, Any]]:
    """The dataset's kohya folders: repeats, name, and the pictures kohya will read in each."""
    folder = project.dataset_dir
    found = []
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            parsed = parse_folder_name(sub.name)
            pictures = sum(1 for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            found.append(
                {
                    "folder": sub.name,
                    "repeats": None if parsed is None else parsed[0],
                    "name": sub.name if parsed is None else parsed[1],
                    "images": pictures,
                }
            )
    return found


def dataset_summary(project: Project) -> dict[str, Any]:
    dataset = list(read_captions(project.dataset_dir)) if project.dataset_dir.is_dir() else []
    counts = tag_counts(dataset)
    return {
        **project.record.dataset.model_dump(mode="json"),
        "folder": str(project.dataset_dir),
        "images": len(dataset),
        "captioned": sum(1 for item in dataset if item.text is not None),
        "tags": len(counts),
        "top_tags": dict(list(counts.items())[:10]),
        "subsets": subsets(project),
    }


def version_summary(version: Version) -> dict[str, Any]:
    return {
        **version.record.model_dump(mode="json"),
        "folder": str(version.layout.folder),
        "config": str(version.layout.config_file),
    }


def project_summary(project: Project) -> dict[str, Any]:
    record = project.record.model_dump(mode="json")
    return {
        **record,
        "folder": str(project.layout.folder),
        "dataset": dataset_summary(project),
        "versions": [version_summary(v) for v in project.versions()],
    }


def list_summary(project: Project) -> dict[str, Any]:
    return {
        "name": project.name,
        "created": project.record.created,
        "folder": str(project.layout.folder),
        "images": project.record.dataset.written,
        "concept": None if project.record.concept is None else project.record.concept.model_dump(),
        "versions": {v.name: v.record.status.value for v in project.versions()},
    }


def concept_text(concept: dict[str, Any] | None) -> list[str]:
    if concept is None:
        return []
    how = f"detected: {concept['evidence']}" if concept["detected"] else "given"
    return [f"concept: {concept['shape']!r} under {concept['trigger']!r} ({how})"]


def project_text(summary: dict[str, Any]) -> list[str]:
    """`project show` as lines of text (from `project_summary`)."""
    dataset = summary["dataset"]
    lines = [
        f"{summary['name']}  ({summary['folder']}, from {summary['source_images']})",
        f"dataset: {dataset['images']} pictures, {dataset['captioned']} captioned, "
        f"{dataset['tags']} tags",
    ]
    lines += [
        f"  {s['folder']}: {s['images']} pictures x {s['repeats']} repeats"
        for s in dataset["subsets"]
    ]
    lines += concept_text(summary["concept"])
    for item in summary["versions"]:
        timing = f", {item['seconds']:.0f} s" if item.get("seconds") is not None else ""
        error = f"; error: {item['error']}" if item.get("error") else ""
        lines.append(
            f"{item['name']}: {item['status']}{timing}; {len(item['files']['checkpoints'])} "
            f"checkpoints, {len(item['previews'])} previews{error}"
        )
    return lines
