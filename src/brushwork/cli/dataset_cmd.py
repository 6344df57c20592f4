"""`brushwork dataset ...`: prepare pictures into a training set, tag them, edit their tags.

    brushwork dataset prepare SRC OUT [--size 512x512 | --buckets] [--crop center|focal|none]
                                      [--flip] [--min-size N]
    brushwork dataset tag DIR --tagger NAME|PATH [--threshold 0.35] [--character-threshold 0.85]
                          [--undesired TAGS] [--always-first TAGS] [--underscores keep|spaces]
                          [--ext .txt] [--overwrite|--append]
    brushwork dataset tags DIR ACTION [VALUES...] [--dry-run] [--json]

Exit codes: 0 done (also when some pictures were skipped: they are reported); 1 a bad option,
folder or tagger; 2 a tagger model file that cannot be used.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from brushwork.cli.errors import exit_on_error
from brushwork.core.errors import ConfigError
from brushwork.core.settings import Settings
from brushwork.datasets.captions import CaptionedImage, check_extension, read_captions
from brushwork.datasets.journal import undo_last
from brushwork.datasets.prepare import CropMode, PrepareOptions, PrepareReport, parse_size
from brushwork.datasets.tag_edit import (
    EditAction,
    SortOrder,
    TagEditRequest,
    TagEditResult,
    edit_dataset_tags,
    feature_tags,
    tag_counts,
)
from brushwork.datasets.taggers.base import RatingPlacement, Underscores
from brushwork.datasets.taggers.run import TaggingReport

dataset_app = typer.Typer(
    name="dataset",
    help="Training sets: prepare pictures (size, crop, dedupe), tag them, edit their tags.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ExtOption = Annotated[
    str, typer.Option("--ext", help="Caption file extension (kohya's caption_extension).")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the changes (before -> after); write nothing.")
]


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@dataset_app.command("prepare")
def prepare(
    src: Annotated[Path, typer.Argument(help="Folder of source pictures (never modified).")],
    out: Annotated[Path, typer.Argument(help="Folder to write the prepared PNGs into.")],
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            help="WIDTHxHEIGHT, snapped to multiples of 64 (default 512x512). "
            "With --buckets: the training resolution whose area the buckets share.",
        ),
    ] = None,
    buckets: Annotated[
        bool,
        typer.Option("--buckets", help="Keep aspect ratios: kohya's buckets instead of one size."),
    ] = False,
    crop: Annotated[
        CropMode,
        typer.Option(help="center: cut evenly; focal: around edges/detail; none: just resize."),
    ] = CropMode.CENTER,
    flip: Annotated[bool, typer.Option("--flip", help="Also write mirrored copies.")] = False,
    min_size: Annotated[
        int, typer.Option("--min-size", help="Skip pictures whose shorter side is below N px.")
    ] = 64,
    min_bucket_reso: Annotated[
        int | None, typer.Option(help="Smallest bucket side (default: half the square's side).")
    ] = None,
    max_bucket_reso: Annotated[
        int | None, typer.Option(help="Largest bucket side (default: twice the square's side).")
    ] = None,
    dedupe: Annotated[
        bool, typer.Option("--dedupe/--no-dedupe", help="Skip duplicates and near duplicates.")
    ] = True,
    near_distance: Annotated[
        int, typer.Option(help="Near duplicates: perceptual-hash bits (of 512) that may differ.")
    ] = 24,
    json_output: JsonOption = False,
) -> None:
    """Resize and crop pictures to multiples of 64 as PNGs, carrying their captions over.

    Broken, tiny, duplicate and near-duplicate pictures are skipped and reported; EXIF
    orientation is applied; CMYK, 16-bit and transparent pictures are converted (on white).
    """
    from brushwork.datasets.prepare import prepare_dataset

    with exit_on_error():
        options = PrepareOptions(
            size=parse_size(size) if size is not None else (512, 512),
            buckets=buckets,
            crop=crop,
            flip=flip,
            min_size=min_size,
            min_bucket_reso=min_bucket_reso,
            max_bucket_reso=max_bucket_reso,
            dedupe=dedupe,
            near_distance=near_distance,
        )
        report = prepare_dataset(src, out, options)
    if json_output:
        _print_json(report.to_json())
        return
    _print_prepare_report(report, size)


def _print_prepare_report(report: PrepareReport, asked_size: str | None) -> None:
    options = report.options
    if asked_size is not None and parse_size(asked_size) != options.size:
        typer.echo(f"size {asked_size} snapped to {options.size[0]}x{options.size[1]}")
    for item in report.kept:
        sizes = f"{item.original_size[0]}x{item.original_size[1]} -> {item.size[0]}x{item.size[1]}"
        notes = f" ({'; '.join(item.notes)})" if item.notes else ""
        typer.echo(f"kept  {item.source}: {sizes}{notes}")
    for skipped in report.skipped:
        typer.echo(f"skip  [{skipped.reason.value}] {skipped.message}")
    counts = report.to_json()["counts"]
    typer.echo(
        f"{counts['kept']} kept ({counts['written']} PNGs written to {report.output}), "
        f"{counts['skipped']} skipped"
    )


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


@dataset_app.command("tag")
def tag(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of images to tag.")],
    tagger: Annotated[
        str,
        typer.Option(
            "--tagger",
            help="`shapes` (built in), a tagger folder (WD14: model.onnx + selected_tags.csv; "
            "DeepDanbooru ONNX + tags.txt; BLIP), or a folder name under <root>/models/taggers.",
        ),
    ],
    threshold: Annotated[float, typer.Option(help="General tags at or above this score.")] = 0.35,
    character_threshold: Annotated[
        float, typer.Option(help="Character tags at or above this score.")
    ] = 0.85,
    undesired: Annotated[
        list[str] | None, typer.Option(help="Tags never written (comma list; repeatable).")
    ] = None,
    always_first: Annotated[
        list[str] | None,
        typer.Option(help="Tags moved to the front when predicted (comma list; repeatable)."),
    ] = None,
    underscores: Annotated[
        Underscores, typer.Option(help="spaces: long_hair -> long hair (kaomoji kept).")
    ] = Underscores.SPACES,
    rating: Annotated[
        RatingPlacement, typer.Option(help="Write the most likely rating tag first or last.")
    ] = RatingPlacement.NONE,
    ext: ExtOption = ".txt",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing captions.")
    ] = False,
    append: Annotated[
        bool, typer.Option("--append", help="Add new tags to existing captions.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Images per tagger call.")] = 8,
    root: Annotated[
        list[Path] | None,
        typer.Option("--root", help="Library root to look for tagger folders in; repeatable."),
    ] = None,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Tag every image in DIR with a tagger, writing `<image stem><ext>` caption files.

    Images that already have a caption are skipped unless --overwrite or --append.
    The run is one undoable change: `brushwork dataset tags DIR undo`.
    """
    from brushwork.datasets.taggers.base import TaggingOptions
    from brushwork.datasets.taggers.resolve import BUILTIN_TAGGERS, is_folder_spec, load_tagger
    from brushwork.datasets.taggers.run import ExistingCaptions, tag_folder
    from brushwork.library.layout import resolve_roots

    with exit_on_error():
        if overwrite and append:
            raise ConfigError("--overwrite and --append exclude each other", hint="pick one")
        existing = (
            ExistingCaptions.OVERWRITE
            if overwrite
            else ExistingCaptions.APPEND
            if append
            else ExistingCaptions.SKIP
        )
        options = TaggingOptions(
            threshold=threshold,
            character_threshold=character_threshold,
            undesired=tuple(undesired or ()),
            always_first=tuple(always_first or ()),
            underscores=underscores,
            rating=rating,
            batch_size=batch_size,
        )
        extension = check_extension(ext)
        needs_library = tagger not in BUILTIN_TAGGERS and not is_folder_spec(tagger)
        roots = resolve_roots(_settings(ctx), tuple(root or ())) if needs_library else ()
        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a folder")
        report = tag_folder(
            directory,
            load_tagger(tagger, roots),
            options,
            existing=existing,
            extension=extension,
            dry_run=dry_run,
        )
    if json_output:
        _print_json(report.to_json())
    else:
        _print_tagging_report(report, directory, dry_run=dry_run)


def _print_tagging_report(report: TaggingReport, directory: Path, *, dry_run: bool) -> None:
    from brushwork.datasets.taggers.run import TagStatus

    for item in report.images:
        detail = ", ".join(item.tags) if item.tags else (item.message or "")
        typer.echo(f"{item.status.value:9}  {item.image}: {detail}")
    written = report.count(TagStatus.WRITTEN)
    verb = "would write" if dry_run else "wrote"
    typer.echo(
        f"{verb} {written} caption files; {report.count(TagStatus.SKIPPED)} skipped "
        f"(had captions), {report.count(TagStatus.FAILED)} unreadable"
    )
    if report.written:
        typer.echo(f"undo with: brushwork dataset tags {directory} undo")


class TagsAction(StrEnum):
    STATS = "stats"
    SHOW = "show"
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"
    DEDUPE = "dedupe"
    SORT = "sort"
    UNDO = "undo"
    FEATURE_TAGS = "feature-tags"


class SortBy(StrEnum):
    FREQUENCY = "frequency"
    NAME = "name"


@dataset_app.command("tags")
def tags(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of captioned images.")],
    action: Annotated[TagsAction, typer.Argument(help="What to do with the tags.")],
    values: Annotated[
        list[str] | None,
        typer.Argument(help="add/remove: TAG...; replace: OLD NEW."),
    ] = None,
    front: Annotated[
        bool, typer.Option("--front", help="add: put the tags first (the trigger word).")
    ] = False,
    pattern: Annotated[
        bool, typer.Option("--pattern", help="remove: TAGs are fnmatch globs (`* hair`).")
    ] = False,
    by: Annotated[SortBy, typer.Option("--by", help="sort: order of the tags.")] = (
        SortBy.FREQUENCY
    ),
    keep_tokens: Annotated[
        int, typer.Option(help="sort: the first N tags stay in place (kohya's keep_tokens).")
    ] = 0,
    min_share: Annotated[
        float, typer.Option(help="feature-tags: tags in more than this share of images.")
    ] = 0.5,
    force: Annotated[
        bool, typer.Option("--force", help="undo: restore files edited since the change too.")
    ] = False,
    ext: ExtOption = ".txt",
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Read and edit the comma-separated tags of every caption file in DIR.

    stats | show | feature-tags [--min-share 0.5] | add TAG... [--front] |
    remove TAG... [--pattern] | replace OLD NEW | dedupe | sort --by frequency|name | undo
    """
    with exit_on_error():
        extension = check_extension(ext)
        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a folder")
        dataset = list(read_captions(directory, extension))
        given = tuple(values or ())
        if action in _READ_ACTIONS:
            if given:
                raise ConfigError(f"`{action.value}` takes no values (got {' '.join(given)})")
            _READ_ACTIONS[action](dataset, min_share, json_output)
        elif action is TagsAction.UNDO:
            if given:
                raise ConfigError(f"`undo` takes no values (got {' '.join(given)})")
            _undo(directory, force=force, dry_run=dry_run, json_output=json_output)
        else:
            request = TagEditRequest(
                EditAction(action.value),
                given,
                front=front,
                pattern=pattern,
                order=SortOrder(by.value),
                keep_tokens=keep_tokens,
            )
            result = edit_dataset_tags(directory, dataset, request, dry_run=dry_run)
            _print_edit(directory, result, dry_run=dry_run, json_output=json_output)


def _stats(dataset: list[CaptionedImage], min_share: float, json_output: bool) -> None:
    counts = tag_counts(dataset)
    if json_output:
        _print_json(counts)
        return
    total = len(dataset)
    captioned = sum(1 for item in dataset if item.text is not None)
    typer.echo(f"{len(counts)} tags in {captioned} captions ({total} images)")
    for name, count in counts.items():
        typer.echo(f"{count:6d}  {count / max(total, 1):6.1%}  {name}")


def _show(dataset: list[CaptionedImage], min_share: float, json_output: bool) -> None:
    if json_output:
        _print_json(
            [
                {
                    "image": str(item.image),
                    "caption_file": str(item.caption_file),
                    "tags": None if item.caption is None else list(item.caption.tags),
                }
                for item in dataset
            ]
        )
        return
    for item in dataset:
        caption = item.caption
        text = "(no caption)" if caption is None else caption.render().strip() or "(empty)"
        typer.echo(f"{item.image}: {text}")


def _feature_tags(dataset: list[CaptionedImage], min_share: float, json_output: bool) -> None:
    found = feature_tags(dataset, min_share)
    if json_output:
        _print_json([{"tag": t.tag, "images": t.images, "share": t.share} for t in found])
        return
    typer.echo(
        f"{len(found)} tags in more than {min_share:.0%} of {len(dataset)} images "
        "(for a character LoRA, candidates to remove: the LoRA learns them as the character)"
    )
    for item in found:
        typer.echo(f"{item.images:6d}  {item.share:6.1%}  {item.tag}")


_READ_ACTIONS = {
    TagsAction.STATS: _stats,
    TagsAction.SHOW: _show,
    TagsAction.FEATURE_TAGS: _feature_tags,
}


def _print_edit(
    directory: Path, result: TagEditResult, *, dry_run: bool, json_output: bool
) -> None:
    if json_output:
        _print_json(
            {
                "action": result.request.label,
                "dry_run": dry_run,
                "written": result.written,
                "changes": [
                    {
                        "image": str(change.image),
                        "caption_file": str(change.caption_file),
                        "before": change.before,
                        "after": change.after,
                        "created": change.created,
                    }
                    for change in result.changes
                ],
            }
        )
        return
    for change in result.changes:
        before = "(new file)" if change.before is None else change.before.strip()
        typer.echo(f"{change.caption_file}: {before} -> {change.after.strip()}")
    if dry_run:
        typer.echo(f"dry run: {len(result.changes)} caption files would change; nothing written")
    elif result.written:
        typer.echo(
            f"{result.request.label}: {len(result.changes)} caption files changed "
            f"(undo with: brushwork dataset tags {directory} undo)"
        )
    else:
        typer.echo(f"{result.request.label}: no caption file changes")
    request = result.request
    if request.action is EditAction.ADD and request.front and result.changes:
        typer.echo(f"train with keep_tokens = {len(request.tags)} to keep them first")


def _undo(directory: Path, *, force: bool, dry_run: bool, json_output: bool) -> None:
    result = undo_last(directory, force=force, dry_run=dry_run)
    if json_output:
        _print_json(
            {
                "undone": result.label,
                "dry_run": dry_run,
                "restored": [str(p) for p in result.restored],
                "deleted": [str(p) for p in result.deleted],
                "unchanged": [str(p) for p in result.unchanged],
                "remaining_levels": result.remaining_levels,
            }
        )
        return
    verb = "would undo" if dry_run else "undid"
    typer.echo(
        f"{verb} {result.label!r}: {len(result.restored)} restored, "
        f"{len(result.deleted)} deleted; {result.remaining_levels} earlier changes can be undone"
    )
