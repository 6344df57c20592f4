"""LoRA and hypernetwork tags: found in the library, applied for the job, restored after."""

from __future__ import annotations

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.generation import Generator, LoraChoice
from brushwork.generation.imaging import image_to_tensor
from brushwork.library.catalog import Library
from brushwork.loading import LoadedModel

from .conftest import small_request


def _weights(model: LoadedModel) -> dict[str, torch.Tensor]:
    modules = {"unet": model.unet, **model.text_encoders}
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }


def _same_weights(before: dict[str, torch.Tensor], model: LoadedModel) -> bool:
    after = _weights(model)
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture
def library_generator(sd1: LoadedModel, library: Library) -> Generator:
    return Generator(sd1, library=library)


def test_a_lora_changes_the_image_and_is_removed_after(
    library_generator: Generator, sd1: LoadedModel, library: Library
) -> None:
    before = _weights(sd1)
    base = library_generator.generate(small_request(prompt="a red cube"))
    styled = library_generator.generate(small_request(prompt="a red cube <lora:style:0.8>"))
    assert not torch.equal(image_to_tensor(base.images[0]), image_to_tensor(styled.images[0]))
    assert _same_weights(before, sd1)
    entry = library.hash_entry(library.find("style", kind=ModelKind.LORA))
    assert f'Lora hashes: "style: {entry.addnet_hash[:12]}"' in styled.infotexts[0]
    assert styled.infotexts[0].startswith("a red cube <lora:style:0.8>\n")


def test_a_lora_at_weight_zero_is_the_base_model_exactly(library_generator: Generator) -> None:
    base = library_generator.generate(small_request(prompt="a red cube"))
    zero = library_generator.generate(small_request(prompt="a red cube <lora:style:0>"))
    assert torch.equal(image_to_tensor(base.images[0]), image_to_tensor(zero.images[0]))
    assert "Lora hashes" in zero.infotexts[0]


def test_a_requested_lora_equals_the_prompt_tag(library_generator: Generator) -> None:
    tagged = library_generator.generate(small_request(prompt="a red cube <lora:style:0.5>"))
    requested = library_generator.generate(
        small_request(prompt="a red cube ", loras=(LoraChoice("style", 0.5),))
    )
    assert torch.equal(image_to_tensor(tagged.images[0]), image_to_tensor(requested.images[0]))
    assert 'Extra LoRAs: "style:0.5"' in requested.infotexts[0]


def test_a_missing_lora_is_named_and_its_recorded_hash_is_tried(
    library_generator: Generator, library: Library
) -> None:
    with pytest.raises(ConfigError, match=r"LoRA 'gone'.*not in the library"):
        library_generator.generate(small_request(prompt="x <lora:gone:1>"))
    entry = library.hash_entry(library.find("style", kind=ModelKind.LORA))
    assert entry.addnet_hash is not None
    short = entry.addnet_hash[:12]
    with pytest.raises(ConfigError, match="recorded hash ffffffffffff"):
        library_generator.generate(
            small_request(prompt="x <lora:gone:1>"), known_hashes={"gone": "ffffffffffff"}
        )
    found = library_generator.generate(
        small_request(prompt="x <lora:gone:1>"), known_hashes={"gone": short}
    )
    assert f"gone: {short}" in found.infotexts[0]


def test_a_lora_tag_without_a_library_says_so(generator: Generator) -> None:
    with pytest.raises(ConfigError, match="needs a model library"):
        generator.generate(small_request(prompt="x <lora:style:1>"))


def test_a_hypernetwork_changes_the_image_and_is_removed_after(
    library_generator: Generator, sd1: LoadedModel
) -> None:
    modules_before = dict(sd1.unet.named_modules())
    base = library_generator.generate(small_request(prompt="a red cube"))
    inked = library_generator.generate(small_request(prompt="a red cube <hypernet:ink:1>"))
    assert not torch.equal(image_to_tensor(base.images[0]), image_to_tensor(inked.images[0]))
    after = dict(sd1.unet.named_modules())
    assert after.keys() == modules_before.keys()
    assert all(after[name] is module for name, module in modules_before.items())
