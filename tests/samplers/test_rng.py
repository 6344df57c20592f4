"""Seeds and initial noise: A1111's ImageRNG semantics, the CPU source and NV Philox."""

from __future__ import annotations

import random

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.samplers import (
    BatchNoise,
    ImageNoise,
    PhiloxGenerator,
    batch_noise,
    batch_seeds,
    noise_stream,
    parse_rng_source,
    resolve_seed,
    slerp,
)

# A1111's modules/rng_philox.py documents this output for Generator(seed=0).randn((3, 4)): CUDA's
# torch.randn after torch.manual_seed(0), printed to 8 decimals. The module itself computes the
# Box-Muller step in float64 and lands within 1e-6 of it.
CUDA_SEED0 = [
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]
# Exact float32 outputs of A1111's rng_philox.Generator (v1.10.1), obtained by running it.
A1111_NV_SEED0 = [
    -0.9246624112129211,
    -0.42534396052360535,
    -2.643845796585083,
    0.14518387615680695,
    -0.12086650729179382,
    -0.5797256827354431,
    -0.6228513121604919,
    -0.32838714122772217,
    -1.0745420455932617,
    -0.3631440997123718,
    -1.6710504293441772,
    2.265505075454712,
]
A1111_NV_SEED1234567890_FIRST6 = [
    0.23617811501026154,
    1.2633901834487915,
    -0.5422237515449524,
    -0.6837679147720337,
    1.5004278421401978,
    1.477517008781433,
]
# The second call of the same generator (offset 1), shape (2, 3).
A1111_NV_SEED1234567890_SECOND_CALL = [
    1.53046715259552,
    -0.26408621668815613,
    -0.6652756333351135,
    1.1442902088165283,
    0.7047105431556702,
    1.8100323677062988,
]
SHAPE = (4, 3, 5)


def test_philox_matches_a1111_nv_bit_for_bit() -> None:
    got = PhiloxGenerator(0).randn((3, 4))
    assert got.dtype == torch.float32
    assert got.flatten().tolist() == A1111_NV_SEED0
    generator = PhiloxGenerator(1234567890)
    assert generator.randn((6,)).tolist() == A1111_NV_SEED1234567890_FIRST6
    assert generator.randn((2, 3)).flatten().tolist() == A1111_NV_SEED1234567890_SECOND_CALL


def test_philox_is_within_a_millionth_of_cuda_randn() -> None:
    got = PhiloxGenerator(0).randn((3, 4))
    torch.testing.assert_close(got, torch.tensor(CUDA_SEED0), rtol=0, atol=1e-6)


def test_philox_elements_do_not_depend_on_the_shape_asked_for() -> None:
    """Element i uses counter i: a longer draw starts with the shorter one."""
    short = PhiloxGenerator(123).randn((7,))
    long = PhiloxGenerator(123).randn((2, 50))
    assert torch.equal(long.flatten()[:7], short)


def test_philox_calls_advance_the_offset_and_seeds_use_all_64_bits() -> None:
    generator = PhiloxGenerator(7)
    first, second = generator.randn((64,)), generator.randn((64,))
    assert generator.offset == 2
    assert not torch.equal(first, second)
    assert torch.equal(PhiloxGenerator(7).randn((64,)), first)
    high = PhiloxGenerator(7 + 2**32).randn((64,))  # same low word, different high word
    assert not torch.equal(high, first)


def test_philox_noise_is_standard_normal() -> None:
    values = PhiloxGenerator(2024).randn((200_000,))
    assert abs(values.mean().item()) < 0.01
    assert abs(values.std().item() - 1.0) < 0.01


def test_cpu_source_equals_torch_randn_with_manual_seed() -> None:
    for seed in (0, 1, 123456789, 2**40 + 3):
        expected = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(seed))
        assert torch.equal(noise_stream(seed, "cpu").randn(SHAPE), expected)
        assert torch.equal(batch_noise(SHAPE, [seed]).first()[0], expected)


@pytest.mark.parametrize("source", ["cpu", "nv"])
def test_batch_equals_single_runs(source: str) -> None:
    batch = batch_noise(SHAPE, [10, 11, 12], source=source)  # type: ignore[arg-type]
    first, later = batch.first(), batch.next()
    for i, seed in enumerate((10, 11, 12)):
        single = batch_noise(SHAPE, [seed], source=source)  # type: ignore[arg-type]
        assert torch.equal(single.first()[0], first[i])
        assert torch.equal(single.next()[0], later[i])


def test_later_draws_continue_each_image_generator() -> None:
    """Ancestral noise comes from the same per-image generator, after the initial noise."""
    batch = batch_noise(SHAPE, [5, 6])
    batch.first()
    generator = torch.Generator("cpu").manual_seed(6)
    torch.randn(SHAPE, generator=generator)
    assert torch.equal(batch.next()[1], torch.randn(SHAPE, generator=generator))


def test_randn_like_gives_initial_noise_first_then_checks_the_shape() -> None:
    batch = batch_noise(SHAPE, [3, 4])
    like = torch.zeros((2, *SHAPE), dtype=torch.float64)
    initial = batch.randn_like(like)
    assert initial.dtype == torch.float64
    assert torch.equal(initial.float(), batch_noise(SHAPE, [3, 4]).first())
    with pytest.raises(ConfigError, match="shape"):
        batch.randn_like(torch.zeros((3, *SHAPE)))


def test_initial_noise_is_drawn_once() -> None:
    batch = batch_noise(SHAPE, [1])
    batch.first()
    with pytest.raises(ConfigError, match="already drawn"):
        batch.first()


@pytest.mark.parametrize("source", ["cpu", "nv"])
def test_variation_strength_zero_and_one(source: str) -> None:
    base = batch_noise(SHAPE, [100], source=source).first()  # type: ignore[arg-type]
    sub = batch_noise(SHAPE, [200], source=source).first()  # type: ignore[arg-type]
    at_zero = batch_noise(SHAPE, [100], [200], 0.0, source=source).first()  # type: ignore[arg-type]
    at_one = batch_noise(SHAPE, [100], [200], 1.0, source=source).first()  # type: ignore[arg-type]
    assert torch.equal(at_zero, base)
    torch.testing.assert_close(at_one, sub, rtol=0, atol=1e-6)
    halfway = batch_noise(SHAPE, [100], [200], 0.5, source=source).first()  # type: ignore[arg-type]
    assert not torch.allclose(halfway, base) and not torch.allclose(halfway, sub)


def test_variation_keeps_the_later_draws_of_the_main_seed() -> None:
    varied = batch_noise(SHAPE, [100], [200], 0.3)
    varied.first()
    plain = batch_noise(SHAPE, [100])
    plain.first()
    assert torch.equal(varied.next(), plain.next())


def test_slerp_nearly_parallel_fallback_weights_are_reversed_as_in_a1111() -> None:
    low = torch.ones(1, 4, 2)
    high = torch.ones(1, 4, 2) * 3
    assert torch.equal(slerp(0.25, low, high), low * 0.25 + high * 0.75)


def test_seed_resize_pastes_the_small_noise_in_the_centre() -> None:
    shape = (4, 8, 8)  # a 64x64 image
    resized = batch_noise(shape, [42], seed_resize_from_h=32, seed_resize_from_w=32).first()[0]
    small = torch.randn((4, 4, 4), generator=torch.Generator().manual_seed(42))
    full = torch.randn(shape, generator=torch.Generator().manual_seed(42))
    assert torch.equal(resized[:, 2:6, 2:6], small)
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:6, 2:6] = False
    assert torch.equal(resized[:, border], full[:, border])


def test_seed_resize_from_a_larger_size_crops_the_centre() -> None:
    shape = (4, 4, 6)
    resized = batch_noise(shape, [9], seed_resize_from_h=64, seed_resize_from_w=64).first()[0]
    large = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(9))
    assert torch.equal(resized, large[:, 2:6, 1:7])


def test_seed_resize_to_the_same_size_changes_nothing() -> None:
    shape = (4, 8, 8)
    same = batch_noise(shape, [42], seed_resize_from_h=64, seed_resize_from_w=64).first()
    assert torch.equal(same, batch_noise(shape, [42]).first())


def test_eta_noise_seed_delta_reseeds_after_the_initial_noise() -> None:
    batch = BatchNoise(SHAPE, [ImageNoise(seed=1000)], eta_noise_seed_delta=31337)
    assert torch.equal(batch.first(), batch_noise(SHAPE, [1000]).first())
    expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1000 + 31337))
    assert torch.equal(batch.next()[0], expected)


def test_minus_one_draws_a_random_seed_in_a1111_range() -> None:
    seed = resolve_seed(-1, rng=random.Random(0))
    assert 0 <= seed < 4294967294
    assert seed == random.Random(0).randrange(4294967294)
    assert resolve_seed(None, rng=random.Random(0)) == seed
    assert resolve_seed(77) == 77


def test_batch_seeds_count_up_like_a1111() -> None:
    assert batch_seeds(10, 50, 0.0, 3) == ((10, 11, 12), (50, 51, 52))
    # With a variation strength every image keeps the seed; the variation seeds count up.
    assert batch_seeds(10, 50, 0.4, 3) == ((10, 10, 10), (50, 51, 52))


@pytest.mark.parametrize("bad", [-2, 2**64, 1.5, True])
def test_bad_seeds_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        resolve_seed(bad)  # type: ignore[arg-type]


def test_rng_source_names() -> None:
    assert parse_rng_source("CPU") == "cpu"
    assert parse_rng_source("NV") == "nv"
    with pytest.raises(ConfigError, match="nv to reproduce NVIDIA GPU noise"):
        parse_rng_source("GPU")


def test_variation_strength_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="variation strength"):
        ImageNoise(seed=1, subseed=2, subseed_strength=1.5)
