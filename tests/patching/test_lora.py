"""LoRA at generation: merged for a generation, restored bit for bit, and the same weights
diffusers' own loader + `fuse_lora` gives for the same kohya file."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from brushwork.core.errors import IncompatibleModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats import safeio
from brushwork.formats.lora import (
    LoraModule,
    LoraNetwork,
    lora_from_peft,
    lora_from_state_dict,
    lora_to_kohya,
    read_lora,
    write_lora,
)
from brushwork.patching.lora import (
    LoraApplication,
    LoraPatcher,
    apply_loras,
    load_lora_application,
)
from brushwork.testing.factory import (
    Components,
    build_components,
    build_meta_components,
    tokenizer,
)

RANK, ALPHA = 4, 2.0  # scale 0.5: anything that loses alpha shows
Snapshot = dict[tuple[str, str], torch.Tensor]


@pytest.fixture(scope="module")
def sd1() -> Components:
    return build_components("sd1", seed=1)


def _models(c: Components) -> dict[str, torch.nn.Module]:
    return {"unet": c.unet, **c.text_encoders}


def _snapshot(c: Components) -> Snapshot:
    return {
        (name, key): value.detach().clone()
        for name, model in _models(c).items()
        for key, value in model.state_dict().items()
    }


def _assert_unchanged(c: Components, before: Snapshot) -> None:
    after = _snapshot(c)
    assert set(after) == set(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype, key
        assert torch.equal(after[key], value), key


def _kohya_targets(c: Components) -> list[str]:
    """kohya's default targets: every Linear / 1x1 conv of the UNet transformers, TE attn + MLP."""
    targets = [
        f"unet.{name}"
        for name, module in c.unet.named_modules()
        if ".attentions." in name and isinstance(module, torch.nn.Linear | torch.nn.Conv2d)
    ]
    for component, encoder in c.text_encoders.items():
        targets += [
            f"{component}.{name}"
            for name, module in encoder.named_modules()
            if isinstance(module, torch.nn.Linear) and (".self_attn." in name or ".mlp." in name)
        ]
    return targets


def _network(
    c: Components, targets: Iterable[str], *, seed: int = 0, rank: int = RANK, alpha: float = ALPHA
) -> LoraNetwork:
    """Random LoRA modules shaped for the layers at `targets` (LoCon for k x k convs)."""
    gen = torch.Generator().manual_seed(seed)
    modules = {}
    for target in targets:
        component, _, path = target.partition(".")
        w = _models(c)[component].get_submodule(path).weight
        down = torch.randn(rank, *w.shape[1:], generator=gen) * 0.2
        up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []), generator=gen) * 0.2
        modules[target] = LoraModule.lora(target, down, up, alpha)
    return LoraNetwork(modules)


def _deltas(c: Components, before: Snapshot) -> dict[str, torch.Tensor]:
    """Patched minus base weight (float32) of every weight that changed, by target."""
    after = _snapshot(c)
    return {
        f"{comp}.{key.removesuffix('.weight')}": after[(comp, key)].float() - w0.float()
        for (comp, key), w0 in before.items()
        if key.endswith(".weight") and not torch.equal(after[(comp, key)], w0)
    }


def _unet_out(unet: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    dtype = next(unet.parameters()).dtype
    sample = torch.randn(1, 4, 16, 16, generator=gen).to(dtype)
    context = torch.randn(1, 7, unet.config.cross_attention_dim, generator=gen).to(dtype)
    with torch.no_grad():
        out: torch.Tensor = unet(sample, 10, encoder_hidden_states=context).sample
    return out


def _te_out(encoder: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[49406, 320, 1125, 539, 49407] + [49407] * 4])
    with torch.no_grad():
        out: torch.Tensor = encoder(ids).last_hidden_state
    return out


SD1_RESNET_PATHS = (  # a LoCon 3x3 conv, a 1x1 shortcut, a time-embedding Linear
    "unet.down_blocks.0.resnets.0.conv1",
    "unet.up_blocks.1.resnets.0.conv_shortcut",
    "unet.down_blocks.0.resnets.0.time_emb_proj",
)


# ---------------------------------------------------------------------------------------------
# exactness


def test_strength_zero_gives_the_base_outputs_exactly(sd1: Components) -> None:
    network = _network(sd1, _kohya_targets(sd1))
    te = sd1.text_encoders["text_encoder"]
    base_unet, base_te = _unet_out(sd1.unet), _te_out(te)
    zero = LoraApplication(network, "style", te_multiplier=0.0)
    with apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=[zero]) as rep:
        assert torch.equal(_unet_out(sd1.unet), base_unet)
        assert torch.equal(_te_out(te), base_te)
    assert rep.modules_applied == 0 and rep.unmatched == ()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_weight_is_restored_bit_for_bit(dtype: torch.dtype) -> None:
    c = build_components("sd1", seed=2, dtype=dtype)
    network = _network(c, [*_kohya_targets(c), *SD1_RESNET_PATHS])
    dora_target = "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
    plain = network.modules[dora_target]
    magnitude = torch.rand(1, plain.parts["down"].shape[1]) + 0.5
    network.modules[dora_target] = LoraModule.lora(
        dora_target, plain.parts["down"], plain.parts["up"], ALPHA, dora_scale=magnitude
    )
    before = _snapshot(c)
    params = {id(p) for p in c.unet.parameters()}
    app = LoraApplication(network, "style", te_multiplier=0.8, unet_multiplier=1.3)
    with apply_loras(unet=c.unet, text_encoders=c.text_encoders, applications=[app]) as report:
        assert len(_deltas(c, before)) == len(network.modules)
        assert report.per_component == {"unet": len(network.modules) - 12, "text_encoder": 12}
    _assert_unchanged(c, before)
    assert {id(p) for p in c.unet.parameters()} == params


def test_a_failure_midway_restores_what_was_already_patched(
    sd1: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brushwork.patching import _lora_merge

    network = _network(sd1, _kohya_targets(sd1))
    before = _snapshot(sd1)
    real, calls = _lora_merge.merge_layer, []

    def failing(*args: object) -> object:
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("out of memory")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("brushwork.patching.lora.merge_layer", failing)
    app = LoraApplication(network, "style")
    with (
        pytest.raises(MemoryError),
        apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=[app]),
    ):
        pass
    _assert_unchanged(sd1, before)


# ---------------------------------------------------------------------------------------------
# the same weights as diffusers


def test_patched_unet_and_text_encoder_match_diffusers_fuse_lora(tmp_path: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    ours, theirs = build_components("sd1", seed=5), build_components("sd1", seed=5)
    network = _network(ours, [*_kohya_targets(ours), *SD1_RESNET_PATHS], seed=3)
    path = tmp_path / "style.safetensors"
    write_lora(path, network, family="sd1")
    pipe = StableDiffusionPipeline(
        vae=theirs.vae,
        text_encoder=theirs.text_encoders["text_encoder"],
        tokenizer=tokenizer(),
        unet=theirs.unet,
        scheduler=EulerDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=0.7)
    pipe.unload_lora_weights()
    base_unet = _unet_out(ours.unet)
    app = load_lora_application(path, te_multiplier=0.7)
    with apply_loras(unet=ours.unet, text_encoders=ours.text_encoders, applications=[app]):
        ours_unet, ours_te = _unet_out(ours.unet), _te_out(ours.text_encoders["text_encoder"])
    theirs_unet = _unet_out(theirs.unet)
    assert (theirs_unet - base_unet).abs().max() > 1e-2  # the LoRA does something
    torch.testing.assert_close(ours_unet, theirs_unet, atol=1e-5, rtol=1e-5)
    theirs_te = _te_out(theirs.text_encoders["text_encoder"])
    torch.testing.assert_close(ours_te, theirs_te, atol=1e-5, rtol=1e-5)


def _other_spellings(c: Components, network: LoraNetwork) -> dict[str, LoraNetwork]:
    """The network as kohya LDM-named keys, diffusers keys and PEFT adapters, read back."""
    ldm, _ = lora_to_kohya(network, family="sdxl", unet_config=c.configs["unet"])
    diffusers: dict[str, torch.Tensor] = {}
    peft: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}}
    for target, module in network.modules.items():
        component, _, path = target.partition(".")
        down, up = module.parts["down"], module.parts["up"]
        diffusers |= {f"{target}.lora_A.weight": down, f"{target}.lora_B.weight": up}
        diffusers[f"{target}.alpha"] = torch.tensor(ALPHA)
        peft[component] |= {
            f"base_model.model.{path}.lora_A.weight": down,
            f"base_model.model.{path}.lora_B.weight": up,
        }
    parts = [lora_from_peft(peft[name], component=name, alpha=ALPHA) for name in peft]
    return {
        "kohya-ldm": lora_from_state_dict(ldm, unet_config=c.configs["unet"]),
        "diffusers": lora_from_state_dict(diffusers),
        "peft": LoraNetwork(parts[0].modules | parts[1].modules, source_format="peft"),
    }


def test_every_key_family_patches_identical_weights(sd1: Components) -> None:
    targets = [
        *_kohya_targets(sd1),
        "unet.down_blocks.0.resnets.0.conv1",
        "unet.down_blocks.0.downsamplers.0.conv",
        "unet.up_blocks.0.upsamplers.0.conv",
    ]
    network = _network(sd1, targets, seed=4)
    kohya, _ = lora_to_kohya(network, family="sd1")
    spelled = {"kohya": lora_from_state_dict(kohya)} | _other_spellings(sd1, network)
    assert {n: s.source_format for n, s in spelled.items()} == {k: k for k in spelled}
    before = _snapshot(sd1)
    patched = {}
    for name, spelling in spelled.items():
        app = LoraApplication(spelling, name)
        with apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=[app]):
            patched[name] = _snapshot(sd1)
    for snapshot in patched.values():
        assert all(torch.equal(snapshot[k], patched["kohya"][k]) for k in before)
    assert len(_deltas_between(before, patched["kohya"])) == len(targets)


def _deltas_between(before: Snapshot, after: Snapshot) -> list[tuple[str, str]]:
    return [k for k in before if not torch.equal(before[k], after[k])]


# ---------------------------------------------------------------------------------------------
# strengths


def test_two_loras_add_their_deltas_at_their_own_strengths(sd1: Components) -> None:
    targets = _kohya_targets(sd1)
    a = _network(sd1, targets[::2] + targets[1:4], seed=10)
    b = _network(sd1, targets[1::2], seed=11, alpha=1.0)
    before = _snapshot(sd1)
    apps = [LoraApplication(a, "a", 0.7), LoraApplication(b, "b", -0.4, unet_multiplier=1.5)]
    with apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=apps) as rep:
        got = _deltas(sd1, before)
    assert set(got) == set(a.modules) | set(b.modules)
    for target, delta in got.items():
        want = torch.zeros_like(delta)
        for network, te, unet in ((a, 0.7, 0.7), (b, -0.4, 1.5)):
            if target in network.modules:
                strength = unet if target.startswith("unet.") else te
                want += strength * network.modules[target].delta_weight(delta.shape)
        torch.testing.assert_close(delta, want, atol=1e-6, rtol=1e-5)
    assert rep.applied["a"]["unet"] + rep.applied["b"]["unet"] == rep.per_component["unet"]


def test_text_encoder_and_unet_multipliers_are_independent(sd1: Components) -> None:
    network = _network(sd1, _kohya_targets(sd1), seed=12)
    before = _snapshot(sd1)
    for te, unet in ((0.5, -2.0), (1.25, None), (0.0, 1.0)):
        app = LoraApplication(network, "style", te, unet)
        with apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=[app]):
            got = _deltas(sd1, before)
        for target, module in network.modules.items():
            strength = (te if unet is None else unet) if target.startswith("unet.") else te
            if strength == 0:
                assert target not in got
                continue
            want = strength * module.delta_weight(got[target].shape)
            torch.testing.assert_close(got[target], want, atol=1e-6, rtol=1e-5)


def test_locon_loha_lokr_full_and_dora_modules_add_their_delta(sd1: Components) -> None:
    gen = torch.Generator().manual_seed(7)
    proj = "unet.down_blocks.0.attentions.0.proj_in"  # a 1x1 conv in SD1
    conv = "unet.down_blocks.0.resnets.0.conv2"  # 32 -> 32, 3x3
    q = "text_encoder.encoder.layers.0.self_attn.q_proj"  # 64 -> 64
    ff = "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2"  # 256 -> 64
    modules = [
        LoraModule(conv, "loha", {n: torch.randn(*s, generator=gen) * 0.1 for n, s in [
            ("w1_a", (32, 2)), ("w1_b", (2, 288)), ("w2_a", (32, 2)), ("w2_b", (2, 288))]}, 1.0),
        LoraModule(q, "lokr", {"w1": torch.randn(8, 8, generator=gen) * 0.1,
                               "w2": torch.randn(8, 8, generator=gen) * 0.1}),
        LoraModule(ff, "full", {"diff": torch.randn(64, 256, generator=gen) * 0.01,
                                "diff_b": torch.randn(64, generator=gen) * 0.01}),
        LoraModule.lora(proj, torch.randn(4, 32, 1, 1, generator=gen), torch.randn(32, 4, 1, 1,
                        generator=gen) * 0.1, 2.0, dora_scale=torch.rand(1, 32, 1, 1) + 0.5),
    ]  # fmt: skip
    network = LoraNetwork({m.target: m for m in modules})
    before = _snapshot(sd1)
    app = LoraApplication(network, "lyco", 0.6)
    with apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=[app]):
        got = _deltas(sd1, before)
        bias = sd1.unet.get_submodule(ff.removeprefix("unet.")).bias.detach().clone()
    assert set(got) == set(network.modules)
    for module in modules[:3]:
        want = 0.6 * module.delta_weight(got[module.target].shape)
        torch.testing.assert_close(got[module.target], want, atol=1e-6, rtol=1e-5)
    base = before[("unet", f"{proj.removeprefix('unet.')}.weight")]
    dora = modules[3].delta_weight(base_weight=base)  # W' - W, then times the multiplier
    torch.testing.assert_close(got[proj], 0.6 * dora, atol=1e-6, rtol=1e-5)
    base_bias = before[("unet", f"{ff.removeprefix('unet.')}.bias")]
    torch.testing.assert_close(bias - base_bias, 0.6 * modules[2].parts["diff_b"])


def test_conv_in_delta_is_zero_padded_on_a_nine_channel_inpainting_unet() -> None:
    c = build_components("sd1", seed=8)
    config = dict(c.unet.config) | {"in_channels": 9}
    unet = UNet2DConditionModel.from_config(config).eval()
    gen = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(32, 2, 1, 1, generator=gen)
    network = LoraNetwork({"unet.conv_in": LoraModule.lora("unet.conv_in", down, up, 2.0)})
    w0 = unet.conv_in.weight.detach().clone()
    with apply_loras(unet=unet, applications=[LoraApplication(network, "x")]) as report:
        delta = unet.conv_in.weight.detach() - w0
    assert report.per_component == {"unet": 1}
    torch.testing.assert_close(delta[:, :4], network.modules["unet.conv_in"].delta_weight())
    assert torch.equal(delta[:, 4:], torch.zeros_like(delta[:, 4:]))
    assert torch.equal(unet.conv_in.weight, w0)


# ---------------------------------------------------------------------------------------------
# what does not fit


def _width_lora(target: str, width: int, out: int) -> LoraModule:
    return LoraModule.lora(target, torch.ones(RANK, width), torch.ones(out, RANK), ALPHA)


def test_a_lora_for_sd2_on_sd1_is_refused_naming_both_families() -> None:
    meta = build_meta_components("sd1")  # full-size shapes, no memory: nothing may be touched
    target = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    network = LoraNetwork({target: _width_lora(target, 1024, 320)})
    app = LoraApplication(network, "sd2-style")
    with (
        pytest.raises(IncompatibleModelError, match=r"1024 \(SD2\).*768 \(SD1\)"),
        apply_loras(unet=meta.unet, text_encoders=meta.text_encoders, applications=[app]),
    ):
        pass


def test_without_shape_evidence_the_lora_family_from_metadata_decides() -> None:
    meta = build_meta_components("sd1")
    target = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # same in SD2
    module = _width_lora(target, 320, 320)
    for family, refused in ((BaseFamily.SD2, True), (BaseFamily.SD1, False), (None, False)):
        app = LoraApplication(LoraNetwork({target: module}, family=family), "x")
        if refused:
            with (
                pytest.raises(IncompatibleModelError, match="for SD2, and this model is SD1"),
                apply_loras(unet=meta.unet, applications=[app]),
            ):
                pass
        else:
            with apply_loras(unet=meta.unet, applications=[app], backup_device=None) as report:
                assert report.per_component == {"unet": 1}  # on `meta`: shapes only


def test_an_incompatible_lora_is_refused_before_anything_is_touched(sd1: Components) -> None:
    good = _network(sd1, _kohya_targets(sd1)[:5])
    te_target = "text_encoder.encoder.layers.0.self_attn.k_proj"
    wide = LoraNetwork(good.modules | {te_target: _width_lora(te_target, 1024, 64)})
    xl_target = "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj"
    xl = LoraNetwork(good.modules | {xl_target: _width_lora(xl_target, 1280, 1280)})
    before = _snapshot(sd1)
    for network, message in ((wide, r"text_encoder width is 1024.* is 64"), (xl, "SDXL")):
        apps = [LoraApplication(good, "fine"), LoraApplication(network, "other")]
        with (
            pytest.raises(IncompatibleModelError, match=message),
            apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=apps),
        ):
            pass
        _assert_unchanged(sd1, before)


def test_missing_layers_shape_mismatches_and_unread_keys_are_reported(
    sd1: Components, tmp_path: Path
) -> None:
    good = _network(sd1, _kohya_targets(sd1)[:3])
    absent = "unet.up_blocks.2.attentions.0.proj_in"  # the tiny UNet has two up blocks
    odd = "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    modules = good.modules | {
        absent: _width_lora(absent, 32, 32),
        odd: _width_lora(odd, 32, 48),
    }
    tensors, meta = lora_to_kohya(LoraNetwork(modules), family="sd1")
    tensors["lora_unet_mystery.weird_part"] = torch.ones(2)
    path = tmp_path / "partial.safetensors"
    safeio.write_safetensors(path, tensors, meta)
    app = load_lora_application(path)
    with apply_loras(unet=sd1.unet, text_encoders=sd1.text_encoders, applications=[app]) as rep:
        pass
    assert rep.modules_applied == len(good.modules)
    reasons = {miss.target: miss.reason for miss in rep.unmatched}
    assert set(reasons) == {absent, odd} and all(m.lora == "partial" for m in rep.unmatched)
    assert "no such module" in reasons[absent]
    assert "does not fit" in reasons[odd] and "[48, 32]" in reasons[odd]
    assert rep.unread_keys == {"partial": ("lora_unet_mystery.weird_part",)}


# ---------------------------------------------------------------------------------------------
# the patcher: a set kept between generations


def test_patcher_switches_sets_restoring_first_and_skips_unchanged_sets(sd1: Components) -> None:
    targets = _kohya_targets(sd1)
    a, b = _network(sd1, targets[:20], seed=20), _network(sd1, targets[10:], seed=21)
    before = _snapshot(sd1)
    app_a, app_b = LoraApplication(a, "a", 0.9), LoraApplication(b, "b", 1.1)

    def expected(app: LoraApplication) -> dict[str, torch.Tensor]:
        return {t: app.te_multiplier * m.delta_weight() for t, m in app.network.modules.items()}

    with LoraPatcher(unet=sd1.unet, text_encoders=sd1.text_encoders) as patcher:
        seen = []
        for app in (app_a, app_b, app_a):
            patcher.apply([app])
            got = _deltas(sd1, before)
            assert set(got) == set(app.network.modules)
            for target, delta in expected(app).items():
                torch.testing.assert_close(got[target], delta.reshape(got[target].shape))
            seen.append(patcher.patch_count)
        assert seen == [1, 2, 3]
        patcher.apply([LoraApplication(a, "a", 0.9)])  # a new object for the same set
        assert patcher.patch_count == 3
        patcher.apply([LoraApplication(a, "a", 0.5)])  # another strength
        assert patcher.patch_count == 4
        patcher.apply([])
        _assert_unchanged(sd1, before)
        patcher.apply([app_b, app_a])
        assert patcher.report.per_component == {"unet": 20 + 38, "text_encoder": 12}
    _assert_unchanged(sd1, before)


def test_patcher_repatches_when_the_file_changes(sd1: Components, tmp_path: Path) -> None:
    path = tmp_path / "style.safetensors"
    write_lora(path, _network(sd1, _kohya_targets(sd1)[:4], seed=30), family="sd1")
    before = _snapshot(sd1)
    with LoraPatcher(unet=sd1.unet, text_encoders=sd1.text_encoders) as patcher:
        patcher.apply([load_lora_application(path)])
        patcher.apply([load_lora_application(path)])
        assert patcher.patch_count == 1  # same file, same mtime: nothing to do
        newer = _network(sd1, _kohya_targets(sd1)[:4], seed=31)
        write_lora(path, newer, family="sd1", overwrite=True)
        stamp = time.time_ns() + 5_000_000_000
        os.utime(path, ns=(stamp, stamp))
        patcher.apply([load_lora_application(path)])
        assert patcher.patch_count == 2
        got = _deltas(sd1, before)
        for target, module in read_lora(path).modules.items():
            torch.testing.assert_close(got[target], module.delta_weight(got[target].shape))
    _assert_unchanged(sd1, before)
