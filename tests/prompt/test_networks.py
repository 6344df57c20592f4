"""extract_networks: <kind:args> tags, as A1111's extra_networks.parse_prompt and Lora reads them."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brushwork.prompt import NetworkRef, extract_networks


def only_ref(prompt: str) -> NetworkRef:
    _, refs = extract_networks(prompt)
    assert len(refs) == 1
    return refs[0]


def test_tags_are_removed_and_the_rest_of_the_prompt_kept() -> None:
    text, refs = extract_networks("a <lora:one:0.5>cat, <hypernet:two:0.7> in <lyco:three> hat")
    assert text == "a cat,  in  hat"
    assert [(r.kind, r.tag, r.name) for r in refs] == [
        ("lora", "lora", "one"),
        ("hypernet", "hypernet", "two"),
        ("lora", "lyco", "three"),
    ]
    assert refs[0].text == "<lora:one:0.5>"


LORA = [
    ("<lora:x>", 1.0, 1.0, None),
    ("<lora:x:0.5>", 0.5, 0.5, None),
    ("<lora:x:0.5:0.25>", 0.5, 0.25, None),
    ("<lora:x:0.5:0.25:8>", 0.5, 0.25, 8),
    ("<lora:x:te=0.3>", 0.3, 0.3, None),
    ("<lora:x:unet=2>", 1.0, 2.0, None),
    ("<lora:x:0.5:te=0.3>", 0.3, 0.3, None),
    ("<lora:x:0.5:0.4:unet=0.1:dyn=16>", 0.5, 0.1, 16),
    ("<lora:x:dyn=4:1>", 1.0, 1.0, 4),  # named and positional items may mix
]


@pytest.mark.parametrize(("tag", "te", "unet", "dyn"), LORA)
def test_lora_multipliers(tag: str, te: float, unet: float, dyn: int | None) -> None:
    ref = only_ref(tag)
    assert (ref.name, ref.te, ref.unet, ref.dyn, ref.problems) == ("x", te, unet, dyn, ())


def test_arguments_are_kept_raw() -> None:
    ref = only_ref("<lora:x:0.5:a=b=c:te=1:te=0.2>")
    assert ref.positional == ("x", "0.5", "a=b=c")  # two "=" make a positional item
    assert ref.named == (("te", "1"), ("te", "0.2"))
    assert ref.te == 0.2  # the last one wins


def test_hypernet_reads_items_as_written() -> None:
    ref = only_ref("<hypernet:h:0.7>")
    assert (ref.name, ref.te, ref.unet, ref.dyn) == ("h", 0.7, 0.7, None)
    assert only_ref("<hypernet:h>").te == 1.0


def test_unknown_kind_keeps_its_arguments() -> None:
    ref = only_ref("<wildcard:colors:x=1:2>")
    assert (ref.kind, ref.name, ref.positional, ref.named) == (
        "wildcard",
        "colors",
        ("colors", "2"),
        (("x", "1"),),
    )


def test_unreadable_values_keep_defaults_and_say_why() -> None:
    ref = only_ref("<lora:x:strong:unet=inf:dyn=big>")
    assert (ref.te, ref.unet, ref.dyn) == (1.0, 1.0, None)
    assert len(ref.problems) == 3
    assert "strong" in ref.problems[0]
    nameless = only_ref("<lora:te=0.5>")
    assert nameless.name == ""
    assert nameless.te == 0.5
    assert "no network name" in nameless.problems[0]


NOT_TAGS = ["<lora>", "<lora:>", "<:x>", "< lora:x>", "<lora :x>", "<lora:x", "a > b < c", ""]


@pytest.mark.parametrize("prompt", NOT_TAGS)
def test_text_that_is_not_a_tag_stays(prompt: str) -> None:
    assert extract_networks(prompt) == (prompt, [])


def test_arguments_run_to_the_first_closing_angle_bracket() -> None:
    text, refs = extract_networks("<lora:<b:c>>\n<lora:x\ny:1>")
    assert text == ">\n"
    assert [ref.positional for ref in refs] == [("<b", "c"), ("x\ny", "1")]


def test_refs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        only_ref("<lora:x>").name = "y"  # type: ignore[misc]


def test_many_unclosed_tags_are_linear() -> None:
    prompt = "<a:" * 40_000
    assert extract_networks(prompt) == (prompt, [])


@settings(max_examples=300, deadline=None)
@given(prompt=st.text(alphabet=st.sampled_from("<>:=a1 .lora"), max_size=40) | st.text())
def test_any_prompt_keeps_all_text_outside_tags(prompt: str) -> None:
    text, refs = extract_networks(prompt)
    assert len(text) + sum(len(ref.text) for ref in refs) == len(prompt)
    assert all(ref.text.startswith("<") and ref.text.endswith(">") for ref in refs)
