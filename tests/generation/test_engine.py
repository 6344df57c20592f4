"""txt2img jobs: reproducible to the bit, seeds as A1111 numbers them, AND, schedules, stop."""

from __future__ import annotations

import threading

import pytest
import torch

from brushwork.conditioning import ScheduledPrompt
from brushwork.generation import (
    GenerationProgress,
    Generator,
    png_bytes,
)
from brushwork.library.catalog import Library
from brushwork.loading import LoadedModel

from .conftest import SIZE, small_request


def _pixels(image: object) -> torch.Tensor:
    from brushwork.generation.imaging import image_to_tensor

    return image_to_tensor(image)  # type: ignore[arg-type]


def test_the_same_request_gives_the_same_png_bytes(generator: Generator) -> None:
    first = generator.generate(small_request())
    again = generator.generate(small_request())
    assert png_bytes(first.images[0], first.infotexts[0]) == png_bytes(
        again.images[0], again.infotexts[0]
    )
    assert first.images[0].size == (SIZE, SIZE)


def test_different_seeds_give_different_images(generator: Generator) -> None:
    one = generator.generate(small_request(seed=1)).images[0]
    two = generator.generate(small_request(seed=2)).images[0]
    assert not torch.equal(_pixels(one), _pixels(two))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE"])
def test_a_batch_of_two_equals_two_single_runs(generator: Generator, sampler: str) -> None:
    """Same noise per image, ancestral and SDE noise included. The UNet runs the batch in one
    call, whose kernels may round differently from a batch of one: at most one level in a
    few pixels."""
    batch = generator.generate(small_request(seed=40, batch_size=2, sampler_name=sampler))
    assert batch.seeds == [40, 41]
    for index, seed in enumerate((40, 41)):
        single = generator.generate(small_request(seed=seed, sampler_name=sampler))
        difference = (_pixels(batch.images[index]) - _pixels(single.images[0])).abs() * 255
        assert difference.max() <= 1.01
        assert (difference > 0).float().mean() < 0.01
        assert batch.infotexts[index] == single.infotexts[0]
        assert f"Seed: {seed}," in batch.infotexts[index]


def test_batch_count_continues_the_seeds(generator: Generator) -> None:
    result = generator.generate(small_request(seed=7, n_iter=2, batch_size=2))
    assert result.seeds == [7, 8, 9, 10]


def test_a_random_seed_is_recorded(generator: Generator) -> None:
    result = generator.generate(small_request(seed=-1))
    seed = result.seeds[0]
    assert 0 <= seed < 2**32
    assert f"Seed: {seed}," in result.infotexts[0]


def test_variation_seeds_keep_the_seed_and_count_the_subseed(generator: Generator) -> None:
    base = generator.generate(small_request(seed=3)).images[0]
    varied = generator.generate(
        small_request(seed=3, subseed=100, subseed_strength=0.5, batch_size=2)
    )
    assert varied.seeds == [3, 3]
    assert varied.subseeds == [100, 101]
    assert "Variation seed: 101, Variation seed strength: 0.5" in varied.infotexts[1]
    assert not torch.equal(_pixels(base), _pixels(varied.images[0]))


def test_and_parts_change_the_image_and_a_zero_weight_part_does_nothing(
    generator: Generator,
) -> None:
    base = _pixels(generator.generate(small_request(prompt="a red cube")).images[0])
    weighted = generator.generate(small_request(prompt="a red cube AND a blue sphere:0.7"))
    silent = generator.generate(small_request(prompt="a red cube AND a blue sphere:0"))
    assert not torch.equal(base, _pixels(weighted.images[0]))
    assert torch.equal(base, _pixels(silent.images[0]))


def test_the_negative_prompt_matters(generator: Generator) -> None:
    one = generator.generate(small_request(negative_prompt="blurry")).images[0]
    two = generator.generate(small_request(negative_prompt="sharp, detailed")).images[0]
    assert not torch.equal(_pixels(one), _pixels(two))


def test_prompt_editing_switches_at_its_step(
    generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[tuple[int, int]] = []
    original = ScheduledPrompt.at_step

    def recording(self: ScheduledPrompt, step: int) -> list:  # type: ignore[type-arg]
        parts = original(self, step)
        if len(self.parts[0][0]) > 1:  # the positive prompt: it has a schedule
            used.append((step, id(parts[0][0])))
        return parts

    monkeypatch.setattr(ScheduledPrompt, "at_step", recording)
    edited = generator.generate(small_request(prompt="[a red cube:a blue sphere:1]"))
    steps = [step for step, _ in used]
    contexts = [context for _, context in used]
    assert steps == [0, 1, 2]
    assert contexts[0] == contexts[1] != contexts[2]  # [a:b:1]: a while step <= 1
    monkeypatch.setattr(ScheduledPrompt, "at_step", original)
    plain = generator.generate(small_request(prompt="a red cube"))
    assert not torch.equal(_pixels(edited.images[0]), _pixels(plain.images[0]))


def test_progress_counts_every_step_of_the_job(generator: Generator) -> None:
    events: list[GenerationProgress] = []
    result = generator.generate(small_request(n_iter=2), progress=events.append)
    assert [e.done for e in events] == [1, 2, 3, 4, 5, 6]
    assert {e.total for e in events} == {6}
    assert [e.iteration for e in events] == [0, 0, 0, 1, 1, 1]
    assert result.timings.sampling_steps == 6
    assert result.timings.unet_calls == 6  # prompt and negative batched in one call
    assert result.timings.it_per_s > 0


def test_cancel_keeps_the_images_finished_before(generator: Generator) -> None:
    cancel = threading.Event()
    seen = []

    def stop_after_first(item: object) -> None:
        seen.append(item)
        cancel.set()

    result = generator.generate(small_request(n_iter=3), cancel=cancel, on_image=stop_after_first)
    assert result.interrupted
    assert len(result.images) == 1 == len(seen)


def test_an_embedding_from_the_library_is_used_and_hashed(
    sd1: LoadedModel, library: Library
) -> None:
    generator = Generator(sd1, library=library)
    with_embedding = generator.generate(small_request(prompt="a shiny cube"))
    assert "TI hashes: " in with_embedding.infotexts[0]
    assert "shiny: " in with_embedding.infotexts[0]
    without = Generator(sd1).generate(small_request(prompt="a shiny cube"))
    assert not torch.equal(_pixels(with_embedding.images[0]), _pixels(without.images[0]))


def test_model_hash_is_the_checkpoints_autov2(generator: Generator, sd1: LoadedModel) -> None:
    from brushwork.core.hashing import sha256_file

    infotext = generator.generate(small_request()).infotexts[0]
    assert f"Model hash: {sha256_file(sd1.source.path)[:10]}, Model: tiny," in infotext


def test_sdxl_gets_its_size_conditioning(sdxl: LoadedModel) -> None:
    calls: list[dict[str, torch.Tensor]] = []

    def record(_module: object, _args: object, kwargs: dict[str, object]) -> None:
        calls.append(kwargs["added_cond_kwargs"])  # type: ignore[arg-type]

    hook = sdxl.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = Generator(sdxl).generate(small_request(width=32, height=48, negative_prompt=""))
    finally:
        hook.remove()
    assert result.images[0].size == (32, 48)
    time_ids = calls[0]["time_ids"]
    assert time_ids.tolist() == [[48.0, 32.0, 0.0, 0.0, 48.0, 32.0]] * 2
    pooled = calls[0]["text_embeds"]
    assert pooled.shape == (2, 128)
    assert torch.count_nonzero(pooled[1]) == 0  # an empty SDXL negative prompt is all zeros
