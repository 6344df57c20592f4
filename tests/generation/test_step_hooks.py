"""The engine's per-step hooks: the live-preview prediction and A1111's Skip."""

from __future__ import annotations

import threading

import numpy as np
import torch

from brushwork.generation import GenerationProgress, Generator

from .conftest import small_request


def _pixels(image: object) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_preview_sees_every_step_prediction_and_the_last_one_is_the_result(
    generator: Generator,
) -> None:
    seen: list[tuple[int, int, torch.Tensor]] = []

    def preview(event: GenerationProgress, denoised: torch.Tensor) -> None:
        seen.append((event.step, event.steps, denoised.clone()))

    request = small_request(steps=4, batch_size=2)
    result = generator.generate(request, preview=preview)
    assert [(step, steps) for step, steps, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(t.shape == (2, 4, 16, 16) for _, _, t in seen)  # the whole batch, latent size
    assert not torch.equal(seen[0][2], seen[-1][2])  # the prediction sharpens step by step
    plain = generator.generate(request)
    assert all(
        np.array_equal(_pixels(a), _pixels(b))
        for a, b in zip(result.images, plain.images, strict=True)
    )  # watching does not change the images


def test_skip_ends_one_batch_keeps_its_prediction_and_draws_the_next_ones(
    generator: Generator,
) -> None:
    request = small_request(steps=6, n_iter=3)
    whole = generator.generate(request)
    skip = threading.Event()

    def press_skip(event: GenerationProgress) -> None:
        if event.iteration == 0 and event.step == 2:
            skip.set()

    skipped = generator.generate(request, progress=press_skip, skip=skip)
    assert not skipped.interrupted and not skip.is_set()
    assert skipped.seeds == whole.seeds == [1, 2, 3]
    first, rest = skipped.images[0], skipped.images[1:]
    assert not np.array_equal(_pixels(first), _pixels(whole.images[0]))  # cut short at step 2
    for got, expected in zip(rest, whole.images[1:], strict=True):
        assert np.array_equal(_pixels(got), _pixels(expected))  # later batches drawn in full
    assert skipped.infotexts == whole.infotexts


def test_a_skip_pressed_between_jobs_does_not_skip_the_next_job(generator: Generator) -> None:
    skip = threading.Event()
    skip.set()
    request = small_request(steps=3)
    result = generator.generate(request, skip=skip)
    plain = generator.generate(request)
    assert np.array_equal(_pixels(result.images[0]), _pixels(plain.images[0]))


def test_interrupt_still_stops_the_whole_job(generator: Generator) -> None:
    cancel = threading.Event()

    def stop(event: GenerationProgress) -> None:
        if event.iteration == 1 and event.step == 1:
            cancel.set()

    request = small_request(steps=3, n_iter=3)
    result = generator.generate(request, progress=stop, cancel=cancel)
    # batch 2 is kept as its first step predicted it (A1111's Interrupt); batch 3 never starts
    assert result.interrupted and result.seeds == [1, 2]
    whole = generator.generate(request)
    assert np.array_equal(_pixels(result.images[0]), _pixels(whole.images[0]))
    assert not np.array_equal(_pixels(result.images[1]), _pixels(whole.images[1]))
    assert result.infotexts == whole.infotexts[:2]
