"""generation floor (F4): txt2img, img2img, inpainting and hires fix, as A1111 draws them.

    generator = Generator(load_model(path), library=library)
    result = generator.generate(GenerationRequest(prompt="a cat", seed=1, steps=20))
    save_image(result.images[0], images_folder(out, "txt2img"), seed=result.seeds[0],
               infotext=result.infotexts[0])

`request` (what to draw, A1111's fields), `engine` (the job), `guidance` (CFG over AND parts),
`sampling` / `hires` / `img2img` (the passes), `networks` (LoRA and hypernetwork tags),
`infotext` (parameters written and read back), `outputs` (PNG files, A1111's folders),
`unet_runner` (eager or compiled UNet).
"""

from brushwork.generation.engine import (
    GeneratedImage,
    GenerationProgress,
    GenerationResult,
    GenerationTimings,
    Generator,
    generate,
)
from brushwork.generation.guidance import GenerationCancelledError
from brushwork.generation.infotext import (
    VERSION,
    ModelFacts,
    RecordedModels,
    make_infotext,
    request_from_infotext,
)
from brushwork.generation.outputs import (
    image_grid,
    images_folder,
    next_sequence_number,
    png_bytes,
    save_grid,
    save_image,
)
from brushwork.generation.request import (
    GenerationRequest,
    LoraChoice,
    MaskedContent,
    ResizeMode,
)
from brushwork.generation.unet_runner import CompileOptions, UNetRunner

__all__ = [
    "VERSION",
    "CompileOptions",
    "GeneratedImage",
    "GenerationCancelledError",
    "GenerationProgress",
    "GenerationRequest",
    "GenerationResult",
    "GenerationTimings",
    "Generator",
    "LoraChoice",
    "MaskedContent",
    "ModelFacts",
    "RecordedModels",
    "ResizeMode",
    "UNetRunner",
    "generate",
    "image_grid",
    "images_folder",
    "make_infotext",
    "next_sequence_number",
    "png_bytes",
    "request_from_infotext",
    "save_grid",
    "save_image",
]
