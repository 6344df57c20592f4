"""The opt-in compiled UNet path gives the eager path's images."""

from __future__ import annotations

import pytest
import torch

from brushwork.generation import CompileOptions, Generator
from brushwork.generation.imaging import image_to_tensor
from brushwork.loading import LoadedModel

from .conftest import small_request


def test_compile_modes_follow_the_device() -> None:
    options = CompileOptions(enabled=True)
    assert options.resolved_mode(torch.device("cuda")) == "reduce-overhead"  # CUDA graphs
    assert options.resolved_mode(torch.device("cpu")) == "default"
    assert CompileOptions(enabled=True, backend="eager").resolved_mode(torch.device("cpu")) is None


def test_the_compiled_path_runs_through_dynamo_and_matches_eager(
    generator: Generator, sd1: LoadedModel
) -> None:
    """Dynamo's eager backend: the compile plumbing without code generation."""
    torch._dynamo.reset()
    compiled = Generator(sd1, compile_options=CompileOptions(enabled=True, backend="eager"))
    assert compiled.runner.compiled
    got = compiled.generate(small_request()).images[0]
    expected = generator.generate(small_request()).images[0]
    assert torch.equal(image_to_tensor(got), image_to_tensor(expected))


@pytest.mark.slow
def test_inductor_on_the_cpu_draws_the_same_image(generator: Generator, sd1: LoadedModel) -> None:
    """Real code generation (C++ on the CPU; on CUDA the same path records CUDA graphs)."""
    torch._dynamo.reset()
    compiled = Generator(sd1, compile_options=CompileOptions(enabled=True))
    got = image_to_tensor(compiled.generate(small_request()).images[0])
    expected = image_to_tensor(generator.generate(small_request()).images[0])
    assert (got - expected).abs().max() <= 2 / 255
