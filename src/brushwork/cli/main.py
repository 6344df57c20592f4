"""The `brushwork` command line: one typer app; each command lives in its own module."""

from __future__ import annotations

import typer

from brushwork.cli import inspect_cmd
from brushwork.cli.dataset_cmd import dataset_app
from brushwork.cli.demo_cmd import demo_app
from brushwork.cli.dev_cmd import dev_app
from brushwork.cli.generate_cmd import generate, img2img
from brushwork.cli.grid_cmd import grid_app
from brushwork.cli.models_cmd import models_app
from brushwork.cli.project_cmd import project_app
from brushwork.cli.prompt_cmd import pnginfo, prompt_app
from brushwork.cli.scratch_cmd import scratch
from brushwork.cli.serve_cmd import serve
from brushwork.cli.tools_cmd import lora_app, merge
from brushwork.cli.train_cmd import train_app
from brushwork.core.settings import Settings
from brushwork.demo.model import builtin_roots

app = typer.Typer(
    name="brushwork",
    help="A workshop for Stable Diffusion models: checkpoints, VAEs, LoRA, embeddings, hypernetworks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(ctx: typer.Context) -> None:
    """A workshop for Stable Diffusion models (A1111, kohya-ss and diffusers compatible)."""
    if ctx.obj is None:  # tests may hand in their own Settings
        ctx.obj = Settings(builtin_roots=builtin_roots())


app.command("generate")(generate)
app.command("img2img")(img2img)
app.command("inspect")(inspect_cmd.inspect)
app.add_typer(models_app, name="models")
app.add_typer(dev_app, name="dev")
app.add_typer(prompt_app, name="prompt")
app.add_typer(demo_app, name="demo")
app.command("pnginfo")(pnginfo)
app.command("serve")(serve)
train_app.command("scratch")(scratch)
app.add_typer(train_app, name="train")
app.command("merge")(merge)
app.add_typer(lora_app, name="lora")
app.add_typer(dataset_app, name="dataset")
app.add_typer(grid_app, name="grid")
app.add_typer(project_app, name="project")


def run() -> None:
    """Console-script entry point (`brushwork = brushwork.cli.main:run`)."""
    app()
