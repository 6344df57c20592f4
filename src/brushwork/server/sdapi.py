"""``/sdapi/v1``: A1111's HTTP API, same routes, field names and response shapes.

Generation routes queue a job and await its future (no thread is held while waiting); images
are on disk and recorded before the reply is built. Listing routes read the library.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.jobs import GenerationOutcome, JobService, checkpoint_title
from brushwork.server.images import decode_bytes, decode_image, encode_png
from brushwork.server.models import (
    Img2ImgBody,
    PngInfoBody,
    Txt2ImgBody,
    check_sampler,
    request_fields,
    warn_ignored,
)

router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])


def service_of(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def safe_text(value: object) -> str:
    """Text that JSON can carry (file names with undecodable bytes are replaced, not fatal)."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- generation ---------------------------------------------------------------------------------


def build_request(body: Txt2ImgBody) -> Any:
    from brushwork.generation import GenerationRequest

    fields = request_fields(body)
    check_sampler(fields)
    if isinstance(body, Img2ImgBody):
        images = body.init_images or []
        if not images:
            raise ConfigError("init_images: img2img needs at least one init image")
        fields["init_images"] = tuple(
            decode_image(data, f"init_images[{index}]") for index, data in enumerate(images)
        )
        if body.mask:
            fields["mask"] = decode_image(body.mask, "mask")
    return GenerationRequest(**fields)


def _submit(service: JobService, body: Txt2ImgBody) -> Any:
    warn_ignored(body)
    request = build_request(body)
    return service.submit_generation(request, override_settings=body.override_settings or {})


async def _generate(request: Request, body: Txt2ImgBody) -> dict[str, Any]:
    service = service_of(request)
    job = await run_in_threadpool(_submit, service, body)
    outcome: GenerationOutcome = await asyncio.wrap_future(job.future)
    return await run_in_threadpool(_reply, service, body, outcome)


def _reply(service: JobService, body: Txt2ImgBody, outcome: GenerationOutcome) -> dict[str, Any]:
    from brushwork.generation import image_grid, png_bytes

    generated = outcome.result.generated
    pngs = [png_bytes(item.image, item.infotext) for item in generated]
    first = 0
    if len(generated) > 1 and service.effective_options(body.override_settings or {}).get(
        "return_grid"
    ):
        grid = image_grid([item.image for item in generated])
        pngs.insert(0, png_bytes(grid, generated[0].infotext))
        first = 1
    images = [encode_png(png) for png in pngs] if body.send_images else []
    parameters = body.model_dump()
    if isinstance(body, Img2ImgBody):
        parameters["init_images"] = None
        parameters["mask"] = None
    return {"images": images, "parameters": parameters, "info": _info(outcome, first)}


def _info(outcome: GenerationOutcome, first: int) -> str:
    result = outcome.result
    request = result.request
    generated = result.generated
    count = len(generated)
    name, _, hashed = outcome.checkpoint_title.partition(" [")
    info = {
        "prompt": request.prompt,
        "all_prompts": [request.prompt] * count,
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [request.negative_prompt] * count,
        "seed": result.seeds[0] if count else request.seed,
        "all_seeds": result.seeds,
        "subseed": result.subseeds[0] if count else request.subseed,
        "all_subseeds": result.subseeds,
        "subseed_strength": request.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": request.sampler_name,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": name.rsplit(".", 1)[0],
        "sd_model_hash": hashed.rstrip("]") or None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": request.seed_resize_from_w or -1,
        "seed_resize_from_h": request.seed_resize_from_h or -1,
        "denoising_strength": request.denoising_strength
        if (request.is_img2img or request.enable_hr)
        else None,
        "extra_generation_params": {},
        "index_of_first_image": first,
        "infotexts": [item.infotext for item in generated],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": "brushwork",
        "interrupted": result.interrupted,
        "saved": [safe_text(path) for path in outcome.saved],
    }
    return json.dumps(info)


@router.post("/txt2img")
async def txt2img(request: Request, body: Txt2ImgBody) -> dict[str, Any]:
    """Draw images from a prompt; A1111's body and reply (``info`` is a JSON string)."""
    return await _generate(request, body)


@router.post("/img2img")
async def img2img(request: Request, body: Img2ImgBody) -> dict[str, Any]:
    """Draw from init images (inpaint with ``mask``); A1111's body and reply."""
    return await _generate(request, body)


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    """The running job's progress; ``current_image`` is its live preview (base64 PNG) unless
    ``skip_current_image`` (options ``live_previews_enable``, ``show_progress_every_n_steps``,
    ``show_progress_type``: ``Approx cheap`` or ``Full``)."""
    return service_of(request).progress(current_image=not skip_current_image)


@router.post("/interrupt")
def interrupt(request: Request) -> dict[str, Any]:
    service_of(request).queue.interrupt_running()
    return {}


@router.post("/skip")
def skip(request: Request) -> dict[str, Any]:
    """Ends the batch being drawn after its current step and goes on with the next (A1111:
    the skipped batch's images are its last prediction); interrupt stops the whole job."""
    service_of(request).queue.interrupt_running(skip=True)
    return {}


# -- options ------------------------------------------------------------------------------------


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    service = service_of(request)
    options = service.options.snapshot()
    if not options.get("sd_model_checkpoint"):
        entry = service.current_checkpoint()
        if entry is not None:
            options["sd_model_checkpoint"] = checkpoint_title(entry)
            options["sd_checkpoint_hash"] = entry.sha256
    return options


@router.post("/options")
async def set_options(request: Request, body: dict[str, Any]) -> None:
    """Store options; a new ``sd_model_checkpoint`` is loaded before the reply (as A1111)."""
    service = service_of(request)
    load = await run_in_threadpool(service.set_options, body)
    if load is not None:
        await asyncio.wrap_future(load.future)


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict[str, Any]:
    """The server's own flags (never credentials)."""
    flags: dict[str, Any] = dict(request.app.state.flags)
    return flags


# -- listings -----------------------------------------------------------------------------------


@router.get("/samplers")
def samplers() -> list[dict[str, object]]:
    from brushwork.samplers import api_samplers

    return api_samplers()


@router.get("/schedulers")
def schedulers() -> list[dict[str, object]]:
    from brushwork.samplers import api_schedules

    return api_schedules()


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    return [
        {
            "title": safe_text(checkpoint_title(entry)),
            "model_name": safe_text(
                checkpoint_title(entry).split(" [")[0].rsplit(".", 1)[0].replace("/", "_")
            ),
            "hash": entry.autov2,
            "sha256": entry.sha256,
            "filename": safe_text(entry.path),
            "config": None,
        }
        for entry in service_of(request).checkpoints()
    ]


@router.get("/sd-vae")
def sd_vae(request: Request) -> list[dict[str, Any]]:
    return [
        {"model_name": safe_text(entry.path.name), "filename": safe_text(entry.path)}
        for entry in service_of(request).entries(ModelKind.VAE)
    ]


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    from brushwork.formats.safeio import read_header

    items = []
    for entry in service_of(request).entries(ModelKind.LORA):
        metadata: dict[str, str] = {}
        if entry.path.suffix == ".safetensors":
            try:
                metadata = dict(read_header(entry.path).metadata)
            except (OSError, ValueError, ConfigError):
                metadata = {}
        items.append(
            {
                "name": safe_text(entry.name),
                "alias": safe_text(entry.alias or entry.name),
                "path": safe_text(entry.path),
                "metadata": {safe_text(k): safe_text(v) for k, v in metadata.items()},
            }
        )
    return items


@router.get("/hypernetworks")
def hypernetworks(request: Request) -> list[dict[str, Any]]:
    return [
        {"name": safe_text(entry.name), "path": safe_text(entry.path)}
        for entry in service_of(request).entries(ModelKind.HYPERNETWORK)
    ]


@router.get("/embeddings")
def embeddings(request: Request) -> dict[str, Any]:
    """``loaded`` (usable with the current checkpoint's family) and ``skipped``, as A1111."""
    from brushwork.conditioning import EmbeddingDatabase

    service = service_of(request)
    entry = service.current_checkpoint()
    paths = [e.path for e in service.entries(ModelKind.EMBEDDING)]
    family = entry.base if entry is not None else None
    if family is None:
        return {"loaded": {}, "skipped": {}}
    database = EmbeddingDatabase.from_files(paths, family=family)
    loaded = {
        safe_text(name): {
            "step": emb.step,
            "sd_checkpoint": emb.sd_checkpoint,
            "sd_checkpoint_name": emb.sd_checkpoint_name,
            "shape": emb.width,
            "vectors": emb.num_vectors,
        }
        for name, emb in database.loaded.items()
    }
    skipped = {
        safe_text(name): {
            "step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
            "shape": None, "vectors": None, "reason": safe_text(reason),
        }
        for name, reason in database.skipped.items()
    }  # fmt: skip
    return {"loaded": loaded, "skipped": skipped}


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/upscalers")
def upscalers() -> list[dict[str, Any]]:
    return [
        {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
        for name in ("None", "Lanczos", "Nearest")
    ]


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict[str, str]]:
    from brushwork.generation.request import LATENT_UPSCALE_MODES

    return [{"name": name} for name in LATENT_UPSCALE_MODES]


@router.get("/prompt-styles")
def prompt_styles() -> list[dict[str, Any]]:
    return []


@router.get("/face-restorers")
def face_restorers() -> list[dict[str, Any]]:
    return []


@router.get("/realesrgan-models")
def realesrgan_models() -> list[dict[str, Any]]:
    return []


@router.post("/refresh-checkpoints")
@router.post("/refresh-loras")
@router.post("/refresh-vae")
@router.post("/refresh-embeddings")
def refresh(request: Request) -> None:
    """Rescan the library (listings always read a fresh scan; this warms it)."""
    service_of(request).library().scan()


@router.post("/png-info")
def png_info(body: PngInfoBody) -> dict[str, Any]:
    from brushwork.prompt import parse_infotext, read_image_infotext

    data = decode_bytes(body.image, "image")
    try:
        text = read_image_infotext(data)
    except (OSError, ValueError) as error:
        raise ConfigError(f"image: not a readable image ({error})") from None
    if not text:
        return {"info": "", "items": {}, "parameters": {}}
    return {"info": text, "items": {}, "parameters": parse_infotext(text)}


@router.get("/memory")
def memory(request: Request) -> dict[str, Any]:
    import torch

    total, free = _ram()
    cuda: dict[str, Any] = {"error": "no CUDA device"}
    if torch.cuda.is_available():
        free_c, total_c = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        cuda = {
            "system": {"free": free_c, "used": total_c - free_c, "total": total_c},
            "active": {"current": stats.get("active_bytes.all.current", 0)},
            "allocated": {"current": stats.get("allocated_bytes.all.current", 0)},
            "reserved": {"current": stats.get("reserved_bytes.all.current", 0)},
            "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0)},
            "events": {
                "retries": stats.get("num_alloc_retries", 0),
                "oom": stats.get("num_ooms", 0),
            },
        }
    workers = [worker.host.memory() for worker in service_of(request).workers]
    return {
        "ram": {"free": free, "used": total - free, "total": total},
        "cuda": cuda,
        "workers": workers,
    }


def _ram() -> tuple[int, int]:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0, 0
    return pages * size, free * size
