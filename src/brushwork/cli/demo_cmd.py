"""`brushwork demo ...`: the shapes world (training folders of generated pictures, and the probe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from brushwork.cli.errors import exit_on_error
from brushwork.core.errors import ConfigError

demo_app = typer.Typer(
    help="The shapes world of the built-in demo model: draw training folders, read pictures.",
    no_args_is_help=True,
)


@demo_app.command("dataset")
def dataset(
    out: Annotated[
        Path, typer.Argument(help="Folder to write the `<repeats>_<name>/` folder into.")
    ],
    shapes: Annotated[
        str,
        typer.Option(help="Comma list of shapes, or `all` (base: circle,square,triangle,star)."),
    ] = "circle,square,triangle,star",
    count: Annotated[int, typer.Option(help="Number of pictures.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same files.")] = 0,
    size: Annotated[int, typer.Option(help="Picture side in pixels.")] = 64,
    repeats: Annotated[int, typer.Option(help="kohya repeats (the folder's number prefix).")] = 10,
    trigger: Annotated[
        str | None, typer.Option(help="Word that replaces the shape's name in the captions.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Folder name after `<repeats>_` (default: trigger or shapes)."),
    ] = None,
    colors: Annotated[str, typer.Option(help="Comma list of shape colours, or `all`.")] = "all",
    backgrounds: Annotated[
        str, typer.Option(help="Comma list of background colours, or `all`.")
    ] = "all",
    shape_sizes: Annotated[str, typer.Option(help="Comma list of: large, small.")] = "large",
    fills: Annotated[str, typer.Option(help="Comma list of: solid, striped.")] = "solid",
    force: Annotated[
        bool, typer.Option("--force", help="Write into a folder that holds files.")
    ] = False,
) -> None:
    """Draw seeded shapes-world pictures with captions, in kohya-ss's training-folder layout.

    Writes OUT/<repeats>_<name>/0000.png with its caption in 0000.txt
    (`a red circle on a white background`; with --trigger sks: `a red sks on a white background`).
    """
    from brushwork.demo.dataset import write_dataset
    from brushwork.demo.shapes import ALL_SHAPES, COLOR_NAMES, FILLS, SIZES, parse_names

    with exit_on_error():
        written = write_dataset(
            out,
            parse_names(shapes, ALL_SHAPES, "shape"),
            count,
            seed=seed,
            size=size,
            repeats=repeats,
            name=name,
            trigger=trigger,
            colors=parse_names(colors, COLOR_NAMES, "colour"),
            backgrounds=parse_names(backgrounds, COLOR_NAMES, "background colour"),
            sizes=parse_names(shape_sizes, SIZES, "size"),
            fills=parse_names(fills, FILLS, "fill"),
            overwrite=force,
        )
        typer.echo(f"wrote {len(written.items)} pictures with captions to {written.folder}")


@demo_app.command("probe")
def probe(
    images: Annotated[list[Path], typer.Argument(help="Pictures to read (PNG, JPEG, ...).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list on stdout.")] = False,
    weights: Annotated[
        Path | None, typer.Option(help="A probe file other than the shipped one.")
    ] = None,
) -> None:
    """Say which shape, colour, background and fill each picture shows, with confidences."""
    from PIL import Image, UnidentifiedImageError

    from brushwork.demo.probe import Probe

    with exit_on_error():
        pictures = []
        for path in images:
            try:
                with Image.open(path) as opened:
                    pictures.append(opened.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise ConfigError(f"{path}: cannot be read as a picture ({exc})") from exc
        results = Probe.load(weights).predict(pictures)
    if as_json:
        rows = [
            {
                "image": str(path),
                "shape": result.shape,
                "color": result.color,
                "background": result.background,
                "fill": result.fill,
                "confidences": {head: round(v, 4) for head, v in result.confidences.items()},
                "confident": result.confident(),
            }
            for path, result in zip(images, results, strict=True)
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    for path, result in zip(images, results, strict=True):
        sure = ", ".join(f"{head} {v:.2f}" for head, v in result.confidences.items())
        flag = "" if result.confident() else "  [unsure: maybe no shape]"
        typer.echo(
            f"{path}: {result.color} {result.fill} {result.shape} on {result.background} ({sure}){flag}"
        )


@demo_app.command("build")
def build(
    out: Annotated[Path, typer.Argument(help="Work folder: the pictures and the run's files.")],
    count: Annotated[int, typer.Option(help="Training pictures to draw.")] = 6000,
    seed: Annotated[int, typer.Option(help="Seed of the pictures.")] = 7,
    max_train_steps: Annotated[
        int | None, typer.Option(help="Diffusion steps (default: the shipped config's).")
    ] = None,
    vae_steps: Annotated[
        int | None, typer.Option(help="Autoencoder steps (default: the shipped config's).")
    ] = None,
    install: Annotated[
        bool,
        typer.Option(
            "--install", help="Copy the result over the built-in demo model of this checkout."
        ),
    ] = False,
) -> None:
    """Rebuild the built-in demo model from nothing: draw the shapes world (base shapes, large,
    solid, every colour on every other colour) and train it from scratch with the shipped config
    (autoencoder, then UNet + text encoder): about 70 minutes on a 2-core CPU."""
    import shutil

    from brushwork.cli.scratch_cmd import run_scratch
    from brushwork.demo.dataset import write_dataset
    from brushwork.demo.model import TRAINING_CONFIG_FILE, demo_model_file
    from brushwork.demo.shapes import BASE_SHAPES

    with exit_on_error():
        data = out / "data"
        written = write_dataset(
            data, BASE_SHAPES, count, seed=seed, repeats=1, name="shapes", overwrite=True
        )
        typer.echo(f"drew {len(written.items)} pictures into {written.folder}")
        overrides: dict[str, object] = {"train_data_dir": data, "output_dir": out / "run"}
        if max_train_steps is not None:
            overrides["max_train_steps"] = max_train_steps
        if vae_steps is not None:
            overrides["vae_steps"] = vae_steps
        model = run_scratch(TRAINING_CONFIG_FILE, overrides)
        if install:
            target = demo_model_file()
            target.parent.mkdir(parents=True, exist_ok=True)
            for source in (model, model.with_suffix(".yaml")):
                if source.is_file():
                    shutil.copyfile(source, target.with_suffix(source.suffix))
            typer.echo(f"installed as {target}")
