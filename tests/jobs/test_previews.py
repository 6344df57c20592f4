"""Live previews (A1111's cheap latent -> RGB map, or a full VAE decode) and Skip, through the
job service."""

from __future__ import annotations

import base64
import io
import time

import pytest
import torch
from PIL import Image

from brushwork.core.kinds import BaseFamily
from brushwork.generation import GenerationRequest
from brushwork.jobs import JobService
from brushwork.jobs.previews import LivePreview, PreviewSettings, approx_cheap_images


def _one_channel(channel: int, value: float = 1.0) -> torch.Tensor:
    latents = torch.zeros(1, 4, 2, 3)
    latents[:, channel] = value
    return latents


def test_approx_cheap_is_a1111s_linear_map_per_family() -> None:
    (image,) = approx_cheap_images(_one_channel(0), BaseFamily.SD1)
    assert image.size == (3, 2)  # latent resolution
    expected = [round((c * 0.5 + 0.5) * 255) for c in (0.298, 0.207, 0.208)]
    assert list(image.getpixel((0, 0))) == expected  # type: ignore[arg-type]
    (dark,) = approx_cheap_images(_one_channel(3, 10.0), BaseFamily.SD2)
    assert list(dark.getpixel((1, 1))) == [0, 0, 0]  # type: ignore[arg-type]  # clamped
    (xl,) = approx_cheap_images(_one_channel(0), BaseFamily.SDXL)
    assert list(xl.getpixel((0, 0))) == [
        round((c * 0.5 + 0.5) * 255) for c in (0.3448, 0.4168, 0.4395)
    ]  # type: ignore[arg-type]


def test_a_preview_is_kept_every_n_steps_and_made_only_when_asked() -> None:
    live = LivePreview(PreviewSettings(every_n_steps=3), BaseFamily.SD1)
    assert live.png() is None
    live.offer(1, 10, _one_channel(0).repeat(4, 1, 1, 1))
    assert live.png() is None and live.kept == 0
    live.offer(3, 10, _one_channel(0).repeat(4, 1, 1, 1))
    png = live.png()
    assert png is not None and live.png() is png  # cached until a newer step
    assert Image.open(io.BytesIO(png)).size == (6, 4)  # a batch of 4: a 2x2 grid
    live.offer(10, 10, _one_channel(1))  # the last step of a pass is always kept
    assert live.kept == 2 and live.png() != png


@pytest.mark.parametrize(
    ("settings", "kept"),
    [
        (PreviewSettings(enabled=False), []),
        (PreviewSettings(every_n_steps=0), []),
        (PreviewSettings(every_n_steps=-1), [5]),
        (PreviewSettings(every_n_steps=2), [2, 4, 5]),
    ],
)
def test_preview_options(settings: PreviewSettings, kept: list[int]) -> None:
    assert [step for step in range(1, 6) if settings.due(step, 5)] == kept


def test_full_previews_decode_in_the_sampling_thread() -> None:
    calls: list[tuple[int, ...]] = []

    def decode(latents: torch.Tensor) -> list[Image.Image]:
        calls.append(tuple(latents.shape))
        return [Image.new("RGB", (16, 16), "red")]

    live = LivePreview(PreviewSettings(every_n_steps=1, kind="Full"), BaseFamily.SD1, decode)
    live.offer(1, 2, torch.zeros(1, 4, 2, 2))
    assert calls == [(1, 4, 2, 2)]
    assert Image.open(io.BytesIO(live.png() or b"")).getpixel((0, 0)) == (255, 0, 0)


def _wait(condition: object, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_progress_carries_the_running_jobs_preview_at_latent_size(service: JobService) -> None:
    service.set_options({"show_progress_every_n_steps": 1})
    request = GenerationRequest(prompt="x", width=32, height=32, steps=300, seed=1)
    job = service.submit_generation(request)
    _wait(lambda: job.progress.step >= 2, "the job never started")
    body = service.progress(current_image=True)
    png = base64.b64decode(body["current_image"])
    assert Image.open(io.BytesIO(png)).size == (16, 16)  # the tiny VAE halves: 16x16 latents
    assert service.progress(current_image=False)["current_image"] is None
    service.queue.interrupt_running()
    job.future.result(timeout=60)
    assert service.progress(current_image=True)["current_image"] is None  # nothing runs


def test_skip_ends_the_current_batch_and_the_job_goes_on(service: JobService) -> None:
    request = GenerationRequest(prompt="x", width=32, height=32, steps=60, seed=7, n_iter=2)
    job = service.submit_generation(request)
    _wait(lambda: job.progress.step >= 2, "the job never started")
    assert job.progress.iteration == 0
    service.queue.interrupt_running(skip=True)
    outcome = job.future.result(timeout=120)
    assert not outcome.interrupted
    assert outcome.result.seeds == [7, 8]  # the skipped batch's image, then the next batch
    assert job.progress.iteration == 1  # the second batch ran
    assert service.store.get(job.id).state == "done"  # type: ignore[union-attr]
