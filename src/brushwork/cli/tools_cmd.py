"""`brushwork merge ...` and `brushwork lora merge|extract|resize|combine ...`: model tools.

Inputs are files or library names (A1111 name, title, relative path or hash); outputs are a
path, or a bare name that lands in the library folder of its kind with a `<stem>.json` sidecar
describing the recipe. Nothing existing is replaced without `--overwrite`, and an input never is.

The lead registers them in cli/main.py:
    app.command("merge")(tools_cmd.merge)
    app.add_typer(tools_cmd.lora_app, name="lora")

Exit codes: 0 done; 1 a bad option, a missing model or models that do not fit together;
2 a model file that cannot be used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from brushwork.cli.errors import exit_on_error
from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily, ModelKind
from brushwork.core.settings import Settings
from brushwork.modeltools.bake import BakeRequest, bake_loras
from brushwork.modeltools.blocks import parse_block_weights
from brushwork.modeltools.combine import CombineRequest, combine_loras
from brushwork.modeltools.common import ModelInput, ProgressCallback
from brushwork.modeltools.extract import ExtractRequest, extract_lora
from brushwork.modeltools.locate import ModelLocator
from brushwork.modeltools.lowrank import RankChoice
from brushwork.modeltools.merge import (
    MergeMethod,
    MergeRequest,
    MergeResult,
    TextEncoderSource,
    default_merge_name,
    merge_checkpoints,
)
from brushwork.modeltools.resize import ResizeRequest, ResizeResult, resize_lora

lora_app = typer.Typer(
    name="lora",
    help="LoRA tools: bake into a checkpoint, extract from a fine-tune, resize, combine.",
    no_args_is_help=True,
)


class Precision(StrEnum):
    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"


class Family(StrEnum):
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"


RootOption = Annotated[
    list[Path] | None,
    typer.Option("--root", help="A library root for names and outputs; repeat for more."),
]
OutOption = Annotated[
    str | None,
    typer.Option("--out", help="Output name (into the library folder) or path."),
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output (never an input).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
DynamicOption = Annotated[
    tuple[str, float] | None,
    typer.Option(
        "--dynamic",
        metavar="METHOD VALUE",
        help="Choose the rank per layer: sv_ratio X, sv_fro X or sv_cumulative X (at most --dim).",
    ),
]
FamilyOption = Annotated[
    Family | None, typer.Option("--family", help="Base family, when the LoRA does not say.")
]


def _locator(ctx: typer.Context, roots: Sequence[Path] | None) -> ModelLocator:
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    return ModelLocator(settings, tuple(roots or ()))


@contextmanager
def _progress_bar(label: str) -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr (only on a terminal); yields the tools' progress callback."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        yield update


def _rank(dim: int, dynamic: tuple[str, float] | None) -> RankChoice:
    if dynamic is None or dynamic[0] is None:
        return RankChoice(dim)
    return RankChoice(dim, dynamic[0], float(dynamic[1]))


def _weighted(spec: str) -> tuple[str, float]:
    """`name:0.7` -> ("name", 0.7); a name whose last `:` part is not a number keeps it."""
    name, sep, tail = spec.rpartition(":")
    if sep and name:
        try:
            return name, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _print_lines(lines: Sequence[str]) -> None:
    console = Console(highlight=False, soft_wrap=True)
    for line in lines:
        console.print(line, markup=False)


# ---------------------------------------------------------------------------------------------
# brushwork merge


def _merge_lines(result: MergeResult) -> list[str]:
    lines = [
        f"wrote {result.path} ({result.family.value}: {result.merged} tensors merged, "
        f"{result.copied} copied from A, {result.from_secondary} text-encoder tensors from B, "
        f"{result.vae_baked} VAE tensors baked)"
    ]
    notes = (
        ("kept from A (not in B)", result.only_in_primary),
        ("in B only (left out)", result.only_in_secondary),
        ("not in C (no difference added)", result.missing_in_tertiary),
        ("pruned (EMA / training-only)", result.pruned),
    )
    for label, keys in notes:
        if keys:
            lines.append(f"{len(keys)} keys {label}, e.g. {', '.join(keys[:3])}")
    lines += [f"sidecar {result.sidecar}"] if result.sidecar else []
    lines += [f"config {result.config} (copied from A)"] if result.config else []
    return lines


def merge(
    ctx: typer.Context,
    model_a: Annotated[str, typer.Argument(metavar="A", help="Primary model (name or path).")],
    model_b: Annotated[str, typer.Argument(metavar="B", help="Secondary model.")],
    model_c: Annotated[
        str | None, typer.Argument(metavar="[C]", help="Tertiary model (add difference).")
    ] = None,
    method: Annotated[
        MergeMethod, typer.Option("--method", help="A1111's interpolation method.")
    ] = MergeMethod.WEIGHTED_SUM,
    alpha: Annotated[
        float, typer.Option("--alpha", "-M", help="Multiplier M (A*(1-M) + B*M).")
    ] = 0.3,
    out: OutOption = None,
    block_weights: Annotated[
        str | None,
        typer.Option(
            "--block-weights",
            help="Per-block M: IN00..,M00,OUT00.. (SD1/SD2 25 values, SDXL 19; BASE first "
            "optional), comma-separated.",
        ),
    ] = None,
    vae: Annotated[str | None, typer.Option("--vae", help="Bake this VAE in.")] = None,
    precision: Annotated[
        Precision | None, typer.Option("--precision", help="Output precision (default: A's).")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Drop EMA and training-only keys.")
    ] = False,
    text_encoder_from: Annotated[
        TextEncoderSource,
        typer.Option("--text-encoder-from", help="Take the text encoder from A, B, or merge it."),
    ] = TextEncoderSource.MERGE,
    root: RootOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Merge checkpoints as A1111's Checkpoint Merger does, streamed tensor by tensor."""
    with exit_on_error():
        if method is MergeMethod.ADD_DIFFERENCE and model_c is None:
            raise ConfigError("add difference needs a third model C", hint="give A B C")
        locator = _locator(ctx, root)
        primary, secondary = (locator.find(q, ModelKind.CHECKPOINT) for q in (model_a, model_b))
        third = locator.find(model_c, ModelKind.CHECKPOINT) if model_c else None
        default = default_merge_name(
            method, alpha, primary.stem, secondary.stem, third.stem if third else None
        )
        request = MergeRequest(
            primary=primary,
            secondary=secondary,
            tertiary=third,
            output=locator.output(out, ModelKind.CHECKPOINT, default),
            method=method,
            alpha=alpha,
            block_weights=parse_block_weights(block_weights) if block_weights else None,
            vae=locator.find(vae, ModelKind.VAE) if vae else None,
            precision=precision.value if precision else None,
            prune=prune,
            text_encoder_from=text_encoder_from,
            overwrite=overwrite,
        )
        with _progress_bar("merging") as progress:
            result = merge_checkpoints(request, progress)
    if as_json:
        _print_json(asdict(result))
        return
    _print_lines(_merge_lines(result))


# ---------------------------------------------------------------------------------------------
# brushwork lora ...


@lora_app.callback()
def lora() -> None:
    """LoRA tools: bake into a checkpoint, extract from a fine-tune, resize, combine."""


def _find_loras(
    locator: ModelLocator, specs: Sequence[str]
) -> tuple[tuple[ModelInput, float], ...]:
    found = []
    for spec in specs:
        name, weight = _weighted(spec)
        found.append((locator.find(name, ModelKind.LORA), weight))
    return tuple(found)


@lora_app.command("merge")
def lora_merge(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The checkpoint (name or path).")],
    loras: Annotated[list[str], typer.Argument(metavar="LORA[:W]...", help="LoRAs and weights.")],
    out: Annotated[str, typer.Option("--out", help="Output name (library folder) or path.")],
    precision: Annotated[
        Precision | None,
        typer.Option("--precision", help="Output precision (default: the model's)."),
    ] = None,
    root: RootOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Bake LoRAs into a checkpoint with the merge code generation uses."""
    with exit_on_error():
        locator = _locator(ctx, root)
        request = BakeRequest(
            model=locator.find(model, ModelKind.CHECKPOINT),
            loras=_find_loras(locator, loras),
            output=locator.output(out, ModelKind.CHECKPOINT, out),
            precision=precision.value if precision else None,
            overwrite=overwrite,
        )
        with _progress_bar("baking") as progress:
            result = bake_loras(request, progress)
    if as_json:
        _print_json(asdict(result))
        return
    lines = [f"wrote {result.path}"]
    for name, counts in result.applied.items():
        merged = ", ".join(f"{count} {component}" for component, count in counts.items())
        lines.append(f"{name}: {merged or 'nothing'} modules merged")
    lines += [f"not merged: {m.lora} {m.target}: {m.reason}" for m in result.unmatched[:10]]
    _print_lines(lines + ([f"sidecar {result.sidecar}"] if result.sidecar else []))


@lora_app.command("extract")
def lora_extract(
    ctx: typer.Context,
    tuned: Annotated[str, typer.Argument(help="The fine-tuned checkpoint.")],
    base: Annotated[str, typer.Argument(help="The checkpoint it was tuned from.")],
    dim: Annotated[int, typer.Option("--dim", help="LoRA rank.")],
    conv_dim: Annotated[
        int | None, typer.Option("--conv-dim", help="Rank of 3x3 convolutions (LoCon).")
    ] = None,
    dynamic: DynamicOption = None,
    clamp_quantile: Annotated[
        float | None,
        typer.Option("--clamp-quantile", help="kohya's outlier clamp (sd-scripts: 0.99)."),
    ] = None,
    min_diff: Annotated[
        float, typer.Option("--min-diff", help="Below this, a text encoder counts as unchanged.")
    ] = 0.01,
    precision: Annotated[Precision, typer.Option("--precision")] = Precision.FP16,
    out: OutOption = None,
    root: RootOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Extract a LoRA from a fine-tune: the SVD of its differences from the base."""
    with exit_on_error():
        locator = _locator(ctx, root)
        tuned_model = locator.find(tuned, ModelKind.CHECKPOINT)
        rank = _rank(dim, dynamic)
        request = ExtractRequest(
            tuned=tuned_model,
            base=locator.find(base, ModelKind.CHECKPOINT),
            output=locator.output(out, ModelKind.LORA, f"{tuned_model.stem}-lora-dim{dim}"),
            rank=rank,
            conv_rank=RankChoice(conv_dim, rank.dynamic, rank.dynamic_value) if conv_dim else None,
            clamp_quantile=clamp_quantile,
            min_diff=min_diff,
            precision=precision.value,
            overwrite=overwrite,
        )
        with _progress_bar("extracting") as progress:
            result = extract_lora(request, progress)
    if as_json:
        _print_json(asdict(result))
        return
    modules = ", ".join(f"{count} {component}" for component, count in result.modules.items())
    lines = [f"wrote {result.path} ({modules} modules)"]
    for name, largest in result.skipped_text_encoders.items():
        lines.append(
            f"{name} is the same as the base's (largest difference {largest:.3g}): "
            "extracted the UNet only"
        )
    if result.unchanged_layers:
        lines.append(f"{len(result.unchanged_layers)} layers unchanged (left out)")
    _print_lines(lines + ([f"sidecar {result.sidecar}"] if result.sidecar else []))


def _resize_lines(result: ResizeResult, verbose: bool) -> list[str]:
    lines = [
        f"wrote {result.path} ({len(result.layers)} modules, mean retained Frobenius norm "
        f"{result.mean_fro_retained:.1%})"
    ]
    if verbose:
        table = Table("module", "rank", "fro retained", "sum retained", box=None)
        for layer in result.layers:
            table.add_row(
                layer.target,
                f"{layer.old_rank} -> {layer.new_rank}",
                f"{layer.fro_retained:.1%}",
                f"{layer.sum_retained:.1%}",
            )
        Console(highlight=False).print(table)
    return lines + ([f"sidecar {result.sidecar}"] if result.sidecar else [])


@lora_app.command("resize")
def lora_resize(
    ctx: typer.Context,
    lora_name: Annotated[str, typer.Argument(metavar="LORA", help="The LoRA (name or path).")],
    dim: Annotated[int, typer.Option("--dim", help="The new rank (an upper bound).")],
    conv_dim: Annotated[
        int | None, typer.Option("--conv-dim", help="New rank of 3x3 convolutions.")
    ] = None,
    dynamic: DynamicOption = None,
    family: FamilyOption = None,
    precision: Annotated[
        Precision | None, typer.Option("--precision", help="Default: the input's.")
    ] = None,
    out: OutOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Per-module retained norms.")
    ] = False,
    root: RootOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Lower a LoRA's rank by SVD, keeping its weights as close as possible (<stem>-dimN)."""
    with exit_on_error():
        locator = _locator(ctx, root)
        source = locator.find(lora_name, ModelKind.LORA)
        rank = _rank(dim, dynamic)
        request = ResizeRequest(
            lora=source,
            output=locator.output(
                out, ModelKind.LORA, f"{source.stem}-dim{dim}", beside=source.path
            ),
            rank=rank,
            conv_rank=RankChoice(conv_dim, rank.dynamic, rank.dynamic_value) if conv_dim else None,
            family=BaseFamily(family.value) if family else None,
            precision=precision.value if precision else None,
            overwrite=overwrite,
        )
        with _progress_bar("resizing") as progress:
            result = resize_lora(request, progress)
    if as_json:
        _print_json(asdict(result))
        return
    _print_lines(_resize_lines(result, verbose))


@lora_app.command("combine")
def lora_combine(
    ctx: typer.Context,
    loras: Annotated[list[str], typer.Argument(metavar="LORA[:W]...", help="LoRAs and weights.")],
    out: Annotated[str, typer.Option("--out", help="Output name (library folder) or path.")],
    dim: Annotated[
        int | None, typer.Option("--dim", help="SVD to this rank (default: concatenate ranks).")
    ] = None,
    conv_dim: Annotated[
        int | None, typer.Option("--conv-dim", help="Rank of 3x3 convolutions.")
    ] = None,
    dynamic: DynamicOption = None,
    family: FamilyOption = None,
    precision: Annotated[Precision | None, typer.Option("--precision")] = None,
    root: RootOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """One LoRA equal to the weighted sum of several."""
    with exit_on_error():
        if dim is None and ((dynamic is not None and dynamic[0] is not None) or conv_dim):
            raise ConfigError("--dynamic and --conv-dim need --dim", hint="give --dim N")
        locator = _locator(ctx, root)
        rank = _rank(dim, dynamic) if dim is not None else None
        conv = RankChoice(conv_dim, rank.dynamic, rank.dynamic_value) if conv_dim and rank else None
        request = CombineRequest(
            loras=_find_loras(locator, loras),
            output=locator.output(out, ModelKind.LORA, out),
            rank=rank,
            conv_rank=conv,
            family=BaseFamily(family.value) if family else None,
            precision=precision.value if precision else None,
            overwrite=overwrite,
        )
        with _progress_bar("combining") as progress:
            result = combine_loras(request, progress)
    if as_json:
        _print_json(asdict(result))
        return
    ranks = sorted(set(result.ranks.values()))
    _print_lines(
        [f"wrote {result.path} ({result.modules} modules, ranks {ranks[0]}..{ranks[-1]})"]
        + ([f"sidecar {result.sidecar}"] if result.sidecar else [])
    )
