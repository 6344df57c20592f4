"""The generation engine: a request and a loaded model in, images with their infotext out.

    generator = Generator(model, library=library)
    result = generator.generate(GenerationRequest(prompt="a cat", seed=1))
    result.images[0].save(...)   # result.infotexts[0] says how to draw it again

Per job, as A1111's ``process_images``: seeds for every image (``seed + i``, or one seed and
``subseed + i`` with a variation strength); extra networks from the prompt merged (restored at
the end); the prompt and negative prompt encoded once per pass; then ``n_iter`` batches of
``batch_size`` images, each sampled (txt2img, or img2img from the prepared init latent), hires
fixed when asked, decoded one image at a time and finished (inpaint overlay).

``progress`` is called after every solver step; ``cancel`` (a `threading.Event`, A1111's
Interrupt) stops the job at the next model call: the images of the batches finished before are
returned with ``interrupted`` set, and so is the batch being drawn, decoded from its last step's
prediction (as A1111 keeps it) when at least one step of it was done. ``on_image`` sees every image as soon as it is finished (to save it).
``preview`` sees, after every solver step, the model's current prediction of the finished
latents (live previews). ``skip`` (A1111's Skip) ends the batch being drawn after its current
step and goes on with the next: the skipped batch's images are decoded from that prediction,
as A1111 keeps them; the event is cleared when it has been acted on and when a batch starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from brushwork.conditioning import EmbeddingDatabase, PromptEncoder, schedule_prompt
from brushwork.core import hashing
from brushwork.core.errors import UnsupportedModelError
from brushwork.core.kinds import ModelKind
from brushwork.generation.guidance import GenerationCancelledError, Guidance, InpaintLatents
from brushwork.generation.hires import HiresPass, plan_hires, run_hires
from brushwork.generation.imaging import sample_to_image
from brushwork.generation.img2img import Img2ImgInputs, latent_factor, prepare_img2img
from brushwork.generation.infotext import (
    VERSION,
    ModelFacts,
    SamplerSettings,
    make_infotext,
    sampler_settings,
)
from brushwork.generation.networks import NetworkFiles, ResolvedNetworks, networks_applied
from brushwork.generation.networks import resolve_networks as find_networks
from brushwork.generation.request import GenerationRequest
from brushwork.generation.sampling import (
    PassPlan,
    img2img_plan,
    sample_pass,
    schedule_steps,
    txt2img_plan,
)
from brushwork.generation.unet_runner import CompileOptions, UNetRunner
from brushwork.library.catalog import Library, LibraryScan
from brushwork.loading import BAKED, LoadedModel, decode_latents
from brushwork.prompt import extract_networks
from brushwork.samplers import BatchNoise, ImageNoise, batch_seeds

logger = logging.getLogger(__name__)

LATENT_CHANNELS = 4


@dataclass(frozen=True)
class GenerationProgress:
    """Where a job stands after one solver step."""

    iteration: int  # the batch being drawn, from 0
    iterations: int
    phase: str  # "sampling" or "hires"
    step: int  # steps done in this pass
    steps: int  # steps of this pass
    done: int  # steps done in the whole job
    total: int  # steps of the whole job


@dataclass(frozen=True, eq=False)
class GeneratedImage:
    """One finished image and what it takes to draw it again."""

    image: Image.Image
    infotext: str
    seed: int
    subseed: int
    index: int  # position in the job, from 0


@dataclass(frozen=True)
class GenerationTimings:
    """Seconds spent, and sampler steps per second the way A1111 reports it/s."""

    total_s: float
    sampling_s: float
    sampling_steps: int
    unet_calls: int

    @property
    def it_per_s(self) -> float:
        return self.sampling_steps / self.sampling_s if self.sampling_s > 0 else 0.0


@dataclass(frozen=True, eq=False)
class GenerationResult:
    """The images of a job, in order, with their infotexts and seeds."""

    request: GenerationRequest
    generated: tuple[GeneratedImage, ...]
    interrupted: bool
    timings: GenerationTimings

    @property
    def images(self) -> list[Image.Image]:
        return [item.image for item in self.generated]

    @property
    def infotexts(self) -> list[str]:
        return [item.infotext for item in self.generated]

    @property
    def seeds(self) -> list[int]:
        return [item.seed for item in self.generated]

    @property
    def subseeds(self) -> list[int]:
        return [item.subseed for item in self.generated]


ProgressCallback = Callable[[GenerationProgress], None]
ImageCallback = Callable[[GeneratedImage], None]
PreviewCallback = Callable[[GenerationProgress, torch.Tensor], None]
"""``preview(progress, denoised)``: ``denoised`` is the batch's predicted final latents
(``batch, 4, h/8, w/8``, on the model's device; do not modify it)."""


class _BatchSkippedError(Exception):
    """Internal: the caller asked to skip the batch being drawn."""


@dataclass
class _Job:
    """The state of one running job (counters; nothing here outlives it)."""

    request: GenerationRequest
    seeds: tuple[int, ...]
    subseeds: tuple[int, ...]
    progress: ProgressCallback | None
    cancel: threading.Event | None
    on_image: ImageCallback | None
    preview: PreviewCallback | None = None
    skip: threading.Event | None = None
    total_steps: int = 0
    done_steps: int = 0
    iteration: int = 0
    sampling_s: float = 0.0
    finished: list[GeneratedImage] = field(default_factory=list)
    denoised: torch.Tensor | None = None  # the latest prediction of the batch being drawn

    def keep_denoised(self, denoised: torch.Tensor) -> None:
        self.denoised = denoised

    def reporter(self, phase: str) -> Callable[[int, int], None]:
        def report(step: int, steps: int) -> None:
            self.done_steps += 1
            event = GenerationProgress(
                self.iteration,
                self.request.n_iter,
                phase,
                step,
                steps,
                self.done_steps,
                self.total_steps,
            )
            if self.progress is not None:
                self.progress(event)
            if self.preview is not None and self.denoised is not None:
                self.preview(event, self.denoised)
            if self.skip is not None and self.skip.is_set():
                self.skip.clear()
                raise _BatchSkippedError()

        return report


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything prepared once per job."""

    first: PassPlan
    guidance: Guidance
    settings: SamplerSettings
    facts: ModelFacts
    hires: HiresPass | None
    img2img: Img2ImgInputs | None


class Generator:
    """Draws images with one loaded model; keeps what is worth keeping between jobs (the
    compiled UNet, networks read, file hashes)."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        library: Library | None = None,
        compile_options: CompileOptions | None = None,
        version: str = VERSION,
    ) -> None:
        self.model = model
        self.library = library
        self.version = version
        self.runner = UNetRunner(model.unet, model.device, compile_options or CompileOptions())
        self.files = NetworkFiles()
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._embeddings: tuple[tuple[tuple[str, int, int], ...], EmbeddingDatabase] | None = None

    def generate(
        self,
        request: GenerationRequest,
        *,
        embeddings: EmbeddingDatabase | None = None,
        known_hashes: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        on_image: ImageCallback | None = None,
        preview: PreviewCallback | None = None,
        skip: threading.Event | None = None,
    ) -> GenerationResult:
        """Draw every image of the request (see the module docstring).

        ``known_hashes``: LoRA name -> short hash from an infotext being reproduced, tried
        when a name is not in the library.
        """
        started = time.perf_counter()
        self._check_model()
        seeds, subseeds = batch_seeds(
            request.seed, request.subseed, request.subseed_strength, request.image_count
        )
        job = _Job(request, seeds, subseeds, progress, cancel, on_image, preview, skip)
        scan = self.library.scan() if self.library is not None else None
        text, refs = extract_networks(request.prompt)
        networks = find_networks(
            refs,
            request.loras,
            self.model,
            library=self.library,
            files=self.files,
            known_hashes=known_hashes,
        )
        database = embeddings if embeddings is not None else self._library_embeddings(scan)
        calls_before = self._unet_calls
        interrupted = False
        with networks_applied(self.model, networks), torch.inference_mode():
            plan = self._plan(job, text, networks, database, scan)
            try:
                for iteration in range(request.n_iter):
                    job.iteration = iteration
                    self._draw_or_skip(job, plan)
            except GenerationCancelledError:
                interrupted = True
                logger.info("generation stopped after %d images", len(job.finished))
        timings = GenerationTimings(
            time.perf_counter() - started,
            job.sampling_s,
            job.done_steps,
            self._unet_calls - calls_before,
        )
        return GenerationResult(request, tuple(job.finished), interrupted, timings)

    # -- preparation ----------------------------------------------------------------------------

    @property
    def _unet_calls(self) -> int:
        return self.runner.calls

    def _check_model(self) -> None:
        channels = int(self.model.unet.config.in_channels)
        if channels != LATENT_CHANNELS:
            raise UnsupportedModelError(
                self.model.source.path,
                f"its UNet takes {channels} input channels (an inpainting or instruct model); "
                "generation supports the ordinary 4-channel models only",
            )

    def _plan(
        self,
        job: _Job,
        text: str,
        networks: ResolvedNetworks,
        database: EmbeddingDatabase | None,
        scan: LibraryScan | None,
    ) -> _Plan:
        request = job.request
        encoder = PromptEncoder(
            self.model,
            clip_skip=request.clip_skip,
            embeddings=database,
            emphasis=request.emphasis,
        )
        settings = sampler_settings(request, request.sampler_name)
        first = self._first_plan(request, settings)
        total = schedule_steps(first.sampler, request.steps)
        guidance = Guidance(
            schedule_prompt(encoder, text, total),
            schedule_prompt(encoder, request.negative_prompt, total, allow_and=False),
            request.cfg_scale,
        )
        hires = plan_hires(self.model, request, encoder) if request.enable_hr else None
        img2img = None
        if request.is_img2img:
            img2img = prepare_img2img(self.model, request, job.seeds[: request.batch_size])
        per_batch = first.steps + (hires.plan.steps if hires is not None else 0)
        job.total_steps = per_batch * request.n_iter
        facts = self._facts(networks, encoder, database, scan)
        return _Plan(first, guidance, settings, facts, hires, img2img)

    def _first_plan(self, request: GenerationRequest, settings: SamplerSettings) -> PassPlan:
        ensd = request.eta_noise_seed_delta if settings.uses_ensd else 0
        sampler, schedule, steps = request.sampler_name, request.scheduler, request.steps
        if not request.is_img2img:
            return txt2img_plan(self.model, sampler, schedule, steps, settings.options, ensd)
        strength = request.denoising_strength
        return img2img_plan(self.model, sampler, schedule, steps, strength, settings.options, ensd)

    # -- one batch --------------------------------------------------------------------------------

    def _noise(self, job: _Job, shape: tuple[int, ...], plan: PassPlan) -> BatchNoise:
        request, size = job.request, job.request.batch_size
        start = job.iteration * size
        images = [
            ImageNoise(
                seed=job.seeds[index],
                subseed=job.subseeds[index],
                subseed_strength=request.subseed_strength,
                seed_resize_from_h=request.seed_resize_from_h,
                seed_resize_from_w=request.seed_resize_from_w,
                source=request.rng,
            )
            for index in range(start, start + size)
        ]
        return BatchNoise(
            shape,
            images,
            eta_noise_seed_delta=plan.eta_noise_seed_delta,
            latent_downscale=latent_factor(self.model),
        )

    def _draw_or_skip(self, job: _Job, plan: _Plan) -> None:
        """Draw one batch; when it is skipped, keep what its last step predicted (A1111)."""
        job.denoised = None
        if job.skip is not None:
            job.skip.clear()
        started = time.perf_counter()
        try:
            self._draw_batch(job, plan)
        except _BatchSkippedError:
            job.sampling_s += time.perf_counter() - started
            logger.info("batch %d of %d skipped", job.iteration + 1, job.request.n_iter)
            if job.denoised is not None:
                self._finish(job, plan, job.denoised)
        except GenerationCancelledError:
            # A1111's Interrupt returns the sampler's last latent too: the batch being drawn is
            # kept as its last step predicted it, and no later batch starts
            job.sampling_s += time.perf_counter() - started
            if job.denoised is not None:
                self._finish(job, plan, job.denoised)
            raise

    def _draw_batch(self, job: _Job, plan: _Plan) -> None:
        request = job.request
        factor = latent_factor(self.model)
        shape = (LATENT_CHANNELS, request.height // factor, request.width // factor)
        started = time.perf_counter()
        inputs = plan.img2img
        inpaint = None
        if inputs is not None and inputs.paint is not None:
            inpaint = InpaintLatents(inputs.init_latent, inputs.paint)
        latents = sample_pass(
            self.model,
            self.runner,
            plan.guidance,
            plan.first,
            self._noise(job, shape, plan.first),
            size=(request.width, request.height),
            start=None if inputs is None else inputs.init_latent,
            noise_multiplier=request.initial_noise_multiplier,
            inpaint=inpaint,
            cancel=job.cancel,
            report=job.reporter("sampling"),
            on_latents=job.keep_denoised,
        )
        if plan.hires is not None:
            latents = run_hires(
                self.model,
                self.runner,
                request,
                plan.hires,
                latents,
                lambda shape, pass_plan: self._noise(job, shape, pass_plan),
                cancel=job.cancel,
                report=job.reporter("hires"),
                on_latents=job.keep_denoised,
            )
        job.sampling_s += time.perf_counter() - started
        self._finish(job, plan, latents)

    def _finish(self, job: _Job, plan: _Plan, latents: torch.Tensor) -> None:
        request = job.request
        start = job.iteration * request.batch_size
        for offset in range(latents.shape[0]):
            decoded = decode_latents(self.model, latents[offset : offset + 1])[0]
            image = sample_to_image(decoded)
            if plan.img2img is not None:
                image = plan.img2img.finish(image, offset)
            index = start + offset
            seed, subseed = job.seeds[index], job.subseeds[index]
            infotext = make_infotext(
                request, plan.facts, seed=seed, subseed=subseed, settings=plan.settings
            )
            generated = GeneratedImage(image, infotext, seed, subseed, index)
            job.finished.append(generated)
            if job.on_image is not None:
                job.on_image(generated)

    # -- facts for infotext ---------------------------------------------------------------------

    def _facts(
        self,
        networks: ResolvedNetworks,
        encoder: PromptEncoder,
        database: EmbeddingDatabase | None,
        scan: LibraryScan | None,
    ) -> ModelFacts:
        source = self.model.source.path
        vae_name = vae_hash = None
        if self.model.vae_source != BAKED:
            vae_path = Path(self.model.vae_source)
            vae_name, vae_hash = vae_path.name, self._sha256(vae_path, scan)[:10]
        ti_hashes = []
        for name in sorted(encoder.used_embeddings()):
            path = database.sources.get(name) if database is not None else None
            if path is not None:
                ti_hashes.append((name, self._sha256(path, scan)[:12]))
        return ModelFacts(
            model_name=source.name.rsplit(".", 1)[0],
            model_hash=self._sha256(source, scan)[:10],
            vae_name=vae_name,
            vae_hash=vae_hash,
            lora_hashes=networks.lora_hashes,
            ti_hashes=tuple(ti_hashes),
            version=self.version,
        )

    def _sha256(self, path: Path, scan: LibraryScan | None) -> str:
        """A file's sha256: from the library's cache when the file is in it, else computed
        once per generator."""
        resolved = path.resolve()
        if self.library is not None and scan is not None:
            for entry in scan.entries:
                if entry.path.resolve() == resolved:
                    hashed = self.library.hash_entry(entry)
                    if hashed.sha256:
                        return hashed.sha256
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = hashing.sha256_file(resolved)
        return self._hashes[key]

    def _library_embeddings(self, scan: LibraryScan | None) -> EmbeddingDatabase | None:
        if scan is None:
            return None
        entries = sorted(
            (e for e in scan.entries if e.kind is ModelKind.EMBEDDING), key=lambda e: e.path
        )
        paths = [e.path for e in entries]
        keys = tuple((str(e.path), e.size or 0, e.mtime_ns or 0) for e in entries)
        if self._embeddings is None or self._embeddings[0] != keys:
            self._embeddings = (keys, EmbeddingDatabase.for_model(paths, self.model))
        return self._embeddings[1]


def generate(
    model: LoadedModel,
    request: GenerationRequest,
    *,
    library: Library | None = None,
    embeddings: EmbeddingDatabase | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    on_image: ImageCallback | None = None,
) -> GenerationResult:
    """One job with a fresh `Generator` (keep a `Generator` to reuse its caches)."""
    generator = Generator(model, library=library)
    return generator.generate(
        request, embeddings=embeddings, progress=progress, cancel=cancel, on_image=on_image
    )
