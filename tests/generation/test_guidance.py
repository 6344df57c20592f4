"""CFG over AND parts, as A1111 combines it, with a stand-in UNet whose answer is known."""

from __future__ import annotations

import torch

from brushwork.conditioning import Conditioning, ScheduledPrompt
from brushwork.generation.guidance import Guidance, GuidedDenoiser, InpaintLatents
from brushwork.loading import LoadedModel

WIDTH = 64  # the tiny SD1 context width


def _cond(value: float, chunks: int = 1) -> Conditioning:
    context = torch.full((1, 77 * chunks, WIDTH), value)
    context[:, -1] = value + 0.5  # a distinct last vector, to see the padding
    return Conditioning(context, None, chunks)


def _prompt(*parts: tuple[Conditioning, float]) -> ScheduledPrompt:
    return ScheduledPrompt(tuple((((10, cond),), weight) for cond, weight in parts))


class FakeUNet:
    """eps = the mean of the context row (so each conditioning gives a known prediction)."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.contexts: list[torch.Tensor] = []

    def __call__(self, sample, timestep, context, added):  # type: ignore[no-untyped-def]
        self.batches.append(sample.shape[0])
        self.contexts.append(context)
        return context.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand_as(sample)


def _expected(
    x: torch.Tensor, sigma: float, conds: list[tuple[float, float]], un: float, cfg: float
):  # type: ignore[no-untyped-def]
    uncond = x - un * sigma
    result = uncond.clone()
    for eps, weight in conds:
        result += ((x - eps * sigma) - uncond) * (weight * cfg)
    return result


def _means(cond: Conditioning, tokens: int) -> float:
    context = cond.context
    if context.shape[1] < tokens:
        pad = context[:, -1:].expand(-1, tokens - context.shape[1], -1)
        context = torch.cat([context, pad], dim=1)
    return float(context.mean())


def test_parts_combine_as_uncond_plus_weighted_differences(sd1: LoadedModel) -> None:
    fake = FakeUNet()
    cat, dog, negative = _cond(1.0), _cond(2.0), _cond(-1.0)
    guidance = Guidance(_prompt((cat, 1.0), (dog, 0.5)), _prompt((negative, 1.0)), 7.0)
    denoiser = GuidedDenoiser(sd1, fake, guidance, size=(32, 32))
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0, 3.0])
    out = denoiser(x, sigma)
    assert fake.batches == [6]  # 2 images x 2 parts + 2 negatives, one call
    parts = [(_means(cat, 77), 1.0), (_means(dog, 77), 0.5)]
    expected = _expected(x, 3.0, parts, _means(negative, 77), 7.0)
    assert torch.allclose(out, expected, atol=1e-5)
    assert denoiser.step == 1


def test_different_lengths_run_apart_and_parts_pad_with_their_last_vector(
    sd1: LoadedModel,
) -> None:
    fake = FakeUNet()
    short, long = _cond(1.0), _cond(2.0, chunks=2)
    guidance = Guidance(_prompt((short, 1.0), (long, 1.0)), _prompt((_cond(0.0), 1.0)), 5.0)
    denoiser = GuidedDenoiser(sd1, fake, guidance, size=(32, 32))
    x = torch.zeros(1, 4, 4, 4)
    out = denoiser(x, torch.tensor([2.0]))
    assert fake.batches == [2, 1]  # prompt rows (154 tokens), then the negative (77)
    padded = fake.contexts[0][0]
    assert padded.shape[0] == 154
    assert torch.equal(padded[77:], padded[76:77].expand(77, -1))
    parts = [(_means(short, 154), 1.0), (_means(long, 154), 1.0)]
    expected = _expected(x, 2.0, parts, _means(_cond(0.0), 77), 5.0)
    assert torch.allclose(out, expected, atol=1e-5)


def test_inpainting_keeps_the_original_latent_outside_the_mask(sd1: LoadedModel) -> None:
    init = torch.full((1, 4, 4, 4), 9.0)
    paint = torch.zeros(1, 1, 4, 4)
    paint[..., :2] = 1.0
    guidance = Guidance(_prompt((_cond(1.0), 1.0)), _prompt((_cond(0.0), 1.0)), 7.0)
    denoiser = GuidedDenoiser(
        sd1, FakeUNet(), guidance, size=(32, 32), inpaint=InpaintLatents(init, paint)
    )
    out = denoiser(torch.zeros(1, 4, 4, 4), torch.tensor([1.0]))
    assert torch.equal(out[..., 2:], init[..., 2:])
    assert not torch.equal(out[..., :2], init[..., :2])
