"""LoRA targeting, activation, training flags and the diffusers safetensors round trip."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

from recapture.adaptation import (
    LORA_WEIGHT_NAME,
    SPATIAL_PATTERN,
    TEMPORAL_PATTERN,
    AdapterSwitch,
    LoRAConfig,
    adapter_parameters,
    add_recapture_adapters,
    build_tiny_components,
    load_lora,
    lora_target_modules,
    save_lora,
    set_active_adapters,
    set_trainable_adapter,
)
from recapture.utils import RecaptureError

PROJ = ("to_q", "to_k", "to_v", "to_out.0")


def _expected(prefixes: list[str], kind: str, attn: str = "attn1") -> list[str]:
    return sorted(f"{p}.{kind}.0.{attn}.{proj}" for p in prefixes for proj in PROJ)


ATTENTIONS = [
    "down_blocks.0.attentions.0",
    "mid_block.attentions.0",
    "up_blocks.1.attentions.0",
    "up_blocks.1.attentions.1",
]


def test_patterns_on_names() -> None:
    spatial = re.compile(SPATIAL_PATTERN)
    temporal = re.compile(TEMPORAL_PATTERN)
    s = "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q"
    t = "down_blocks.0.attentions.1.temporal_transformer_blocks.0.attn1.to_q"
    assert spatial.fullmatch(s) and not spatial.fullmatch(t)
    assert temporal.fullmatch(t) and not temporal.fullmatch(s)
    assert not spatial.fullmatch("mid_block.attentions.0.transformer_blocks.0.attn2.to_k")
    assert not spatial.fullmatch("up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.1")


def test_adapters_wrap_exactly_the_expected_modules(tiny) -> None:
    config = LoRAConfig(rank=4)
    add_recapture_adapters(tiny.unet, config)
    wrapped = {"spatial": [], "temporal": []}
    for name, module in tiny.unet.named_modules():
        if hasattr(module, "lora_A"):
            for adapter in module.lora_A:
                wrapped[adapter].append(name)
    assert sorted(wrapped["spatial"]) == _expected(ATTENTIONS, "transformer_blocks")
    assert sorted(wrapped["temporal"]) == _temporal_linear(ATTENTIONS)
    assert lora_target_modules(tiny.unet, "spatial") == sorted(wrapped["spatial"])
    assert all("temporal" not in n for n in wrapped["spatial"])
    # Ranks and the default alpha (= rank, scale 1).
    layer = tiny.unet.get_submodule(wrapped["spatial"][0])
    assert layer.lora_A["spatial"].weight.shape[0] == 4 and layer.scaling["spatial"] == 1.0
    # Base weights are frozen; LoRA parameters of both adapters are trainable.
    trainable = {n for n, p in tiny.unet.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(adapter_parameters(tiny.unet, "spatial")) == 2 * 4 * len(ATTENTIONS)


def _temporal_linear(prefixes: list[str]) -> list[str]:
    """Every nn.Linear of the temporal transformer blocks (the paper's temporal LoRA)."""
    ff = ["ff_in.net.0.proj", "ff_in.net.2", "ff.net.0.proj", "ff.net.2"]
    attn = _expected(prefixes, "temporal_transformer_blocks", "attn1") + _expected(
        prefixes, "temporal_transformer_blocks", "attn2"
    )
    return sorted(attn + [f"{p}.temporal_transformer_blocks.0.{f}" for p in prefixes for f in ff])


def test_default_temporal_targets_are_every_linear_layer_of_the_temporal_blocks(tiny) -> None:
    """The paper: "the linear layers of the temporal transformer blocks" (attention and feed-forward)."""
    import torch.nn as nn

    every_linear = sorted(
        n for n, m in tiny.unet.named_modules() if isinstance(m, nn.Linear) and ".temporal_transformer_blocks." in n
    )
    assert lora_target_modules(tiny.unet, "temporal") == every_linear == _temporal_linear(ATTENTIONS)


@pytest.mark.parametrize(
    "targets, attns",
    [("attention", ("attn1", "attn2")), ("self_attention", ("attn1",))],
)
def test_narrower_temporal_target_options(tiny, targets, attns) -> None:
    config = LoRAConfig(rank=2, alpha=4.0, temporal_targets=targets)
    add_recapture_adapters(tiny.unet, config)
    names = lora_target_modules(tiny.unet, "temporal", config)
    expected = [n for a in attns for n in _expected(ATTENTIONS, "temporal_transformer_blocks", a)]
    assert names == sorted(expected)
    layer = tiny.unet.get_submodule(names[0])
    assert "temporal" in layer.lora_A and layer.scaling["temporal"] == 2.0


def test_the_convolutions_option_adds_each_sides_resnet_convolutions(tiny, unet_inputs, run_unet) -> None:
    """``convolutions``: spatial_res_block convs join the spatial LoRA, temporal_res_block convs the temporal one."""
    import torch.nn as nn

    convs = {
        side: sorted(
            n for n, m in tiny.unet.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Conv3d)) and n.endswith((f".{side}_res_block.conv1", f".{side}_res_block.conv2"))
        )
        for side in ("spatial", "temporal")
    }
    assert convs["spatial"] and convs["temporal"]
    x = unet_inputs()
    with torch.no_grad():
        base = run_unet(tiny.unet, x)
    config = LoRAConfig(rank=2, convolutions=True)
    add_recapture_adapters(tiny.unet, config)
    assert lora_target_modules(tiny.unet, "spatial", config) == sorted(
        _expected(ATTENTIONS, "transformer_blocks") + convs["spatial"]
    )
    assert lora_target_modules(tiny.unet, "temporal", config) == sorted(_temporal_linear(ATTENTIONS) + convs["temporal"])
    wrapped = {n for n, m in tiny.unet.named_modules() if hasattr(m, "lora_A")}
    assert not {n for n in wrapped if "conv_shortcut" in n or n in ("conv_in", "conv_out") or "sampler" in n}
    # the default leaves every convolution alone
    assert not set(lora_target_modules(tiny.unet, "temporal")) & set(convs["temporal"])
    for side, names in convs.items():
        layer = tiny.unet.get_submodule(names[0])
        assert list(layer.lora_A) == [side]  # each convolution holds its own side's adapter only
        kind = nn.Conv2d if side == "spatial" else nn.Conv3d
        assert isinstance(layer.base_layer, kind) and isinstance(layer.lora_A[side], kind)
        assert layer.lora_A[side].weight.shape[0] == 2
    with torch.no_grad():
        torch.testing.assert_close(run_unet(tiny.unet, x), base, rtol=1e-5, atol=1e-5)  # B = 0: no-op


def test_a_convolution_lora_round_trips_through_the_diffusers_file(tmp_path, unet_inputs, run_unet,
                                                                   perturb_adapter) -> None:
    config = LoRAConfig(rank=3, convolutions=True)
    trained = build_tiny_components(seed=0).unet
    add_recapture_adapters(trained, config)
    for name in ("spatial", "temporal"):
        perturb_adapter(trained, name, seed=len(name))
        save_lora(trained, name, tmp_path / name)
    with safe_open(str(tmp_path / "temporal" / LORA_WEIGHT_NAME), "pt") as f:
        assert any("temporal_res_block.conv1.lora_A" in k for k in f.keys())
    fresh = build_tiny_components(seed=0).unet
    for name in ("spatial", "temporal"):
        load_lora(fresh, name, tmp_path / name)
    assert lora_target_modules(fresh, "temporal", config) == lora_target_modules(trained, "temporal", config)
    got = dict(fresh.named_parameters())
    for name, p in trained.named_parameters():
        if ".lora_" in name:
            assert torch.equal(got[name].detach(), p.detach()), name
    x = unet_inputs()
    with torch.no_grad():
        torch.testing.assert_close(run_unet(fresh, x), run_unet(trained, x), rtol=1e-5, atol=1e-5)


def test_unknown_temporal_targets_is_a_clear_error(tiny) -> None:
    with pytest.raises(RecaptureError, match="temporal_targets"):
        add_recapture_adapters(tiny.unet, LoRAConfig(temporal_targets="ffn"))


def test_both_adapters_active_and_each_changes_output(tiny, unet_inputs, run_unet, perturb_adapter) -> None:
    x = unet_inputs()
    with torch.no_grad():
        base = run_unet(tiny.unet, x)
        add_recapture_adapters(tiny.unet)
        torch.testing.assert_close(run_unet(tiny.unet, x), base, rtol=1e-5, atol=1e-5)  # B = 0: no-op
        perturb_adapter(tiny.unet, "spatial")
        perturb_adapter(tiny.unet, "temporal", seed=2)
        both = run_unet(tiny.unet, x)
        set_active_adapters(tiny.unet, ["spatial"])
        spatial_only = run_unet(tiny.unet, x)
        set_active_adapters(tiny.unet, ["temporal"])
        temporal_only = run_unet(tiny.unet, x)
        set_active_adapters(tiny.unet, [])
        none = run_unet(tiny.unet, x)
        set_active_adapters(tiny.unet, ["spatial", "temporal"])
        again = run_unet(tiny.unet, x)
    torch.testing.assert_close(none, base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, both, rtol=1e-5, atol=1e-5)
    # Each adapter changes the output on its own, and dropping either one changes the combined output.
    for out in (spatial_only, temporal_only):
        assert (out - base).abs().max() > 1e-4
    assert (both - spatial_only).abs().max() > 1e-4
    assert (both - temporal_only).abs().max() > 1e-4


def test_unknown_adapter_name_is_a_clear_error(tiny) -> None:
    with pytest.raises(RecaptureError, match="no adapters"):
        set_active_adapters(tiny.unet, ["spatial"])
    add_recapture_adapters(tiny.unet)
    for call in (
        lambda: set_active_adapters(tiny.unet, ["spatial", "motion"]),
        lambda: adapter_parameters(tiny.unet, "motion"),
        lambda: set_trainable_adapter(tiny.unet, "motion"),
        lambda: save_lora(tiny.unet, "motion", "unused"),
    ):
        with pytest.raises(RecaptureError, match=r"'motion'.*\['spatial', 'temporal'\]"):
            call()
    with pytest.raises(RecaptureError, match="already has adapter"):
        add_recapture_adapters(tiny.unet)


def test_set_trainable_adapter(tiny) -> None:
    add_recapture_adapters(tiny.unet)
    set_trainable_adapter(tiny.unet, "temporal")
    trainable = {id(p) for p in tiny.unet.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in adapter_parameters(tiny.unet, "temporal")}
    set_trainable_adapter(tiny.unet, None)
    assert not any(p.requires_grad for p in tiny.unet.parameters())


@pytest.mark.parametrize("choice", ["temporal", "spatial", ["spatial", "temporal"], None])
def test_adapter_switch_sets_the_flags_set_trainable_adapter_sets(tiny, choice) -> None:
    add_recapture_adapters(tiny.unet)
    params = list(tiny.unet.parameters())
    next(p for p in params if not p.requires_grad).requires_grad_(True)  # a stray unfrozen base weight
    switch = AdapterSwitch(tiny.unet)
    assert switch.names == ("spatial", "temporal")
    for previous in ("spatial", None, "temporal"):  # whatever the previous step left
        switch.train(previous)
        switch.train(choice)
        flags = [p.requires_grad for p in params]
        set_trainable_adapter(tiny.unet, choice)
        assert flags == [p.requires_grad for p in params]
    assert any(flags) == (choice is not None)
    with pytest.raises(RecaptureError, match=r"'motion'.*\['spatial', 'temporal'\]"):
        switch.train("motion")


def test_save_load_roundtrip_on_fresh_unet(tiny, tmp_path, unet_inputs, run_unet, perturb_adapter) -> None:
    add_recapture_adapters(tiny.unet, LoRAConfig(rank=4, alpha=8.0))
    perturb_adapter(tiny.unet, "spatial")
    perturb_adapter(tiny.unet, "temporal", seed=3)
    out_dirs = {
        name: save_lora(tiny.unet, name, tmp_path / "lora" / name) for name in ("spatial", "temporal")
    }
    weights = out_dirs["spatial"] / LORA_WEIGHT_NAME
    assert weights.is_file() and not list((tmp_path / "lora").glob(".*partial*"))
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    assert all("temporal" not in k for k in keys)  # adapter names are not baked into the keys

    fresh = build_tiny_components(seed=0).unet
    x = unet_inputs()
    for name, directory in out_dirs.items():
        load_lora(fresh, name, directory)
    with torch.no_grad():
        torch.testing.assert_close(run_unet(fresh, x), run_unet(tiny.unet, x), rtol=1e-5, atol=1e-5)
        set_active_adapters(fresh, ["spatial"])
        set_active_adapters(tiny.unet, ["spatial"])
        torch.testing.assert_close(run_unet(fresh, x), run_unet(tiny.unet, x), rtol=1e-5, atol=1e-5)
    # Loading again under the same name replaces the adapter.
    load_lora(fresh, "spatial", out_dirs["spatial"])
    assert sorted(fresh.peft_config) == ["spatial", "temporal"]


def test_load_lora_with_missing_files(tiny, tmp_path) -> None:
    with pytest.raises(RecaptureError, match=rf"does not exist.*{LORA_WEIGHT_NAME}"):
        load_lora(tiny.unet, "spatial", tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(RecaptureError, match=rf"empty.*{LORA_WEIGHT_NAME}.*adapter_model.bin"):
        load_lora(tiny.unet, "spatial", empty)


@pytest.mark.parametrize("base_dtype", [torch.float16, torch.bfloat16])
def test_loaded_lora_keeps_the_trained_float32_values_bitwise(tmp_path, perturb_adapter, base_dtype) -> None:
    """diffusers casts loaded LoRA weights to the base dtype; generation after `generate` must equal fit's."""
    trained = build_tiny_components()
    add_recapture_adapters(trained.unet)
    perturb_adapter(trained.unet, "temporal", scale=0.1234567)
    save_lora(trained.unet, "temporal", tmp_path / "temporal")
    fresh = build_tiny_components()
    fresh.unet.to(base_dtype)
    add_recapture_adapters(fresh.unet)
    load_lora(fresh.unet, "temporal", tmp_path / "temporal")
    got, want = adapter_parameters(fresh.unet, "temporal"), adapter_parameters(trained.unet, "temporal")
    assert all(p.dtype == torch.float32 for p in got)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_truncated_or_foreign_lora_file_is_a_clear_error(tmp_path, caplog) -> None:
    from safetensors.torch import load_file, save_file

    trained = build_tiny_components()
    add_recapture_adapters(trained.unet, LoRAConfig(rank=4))
    save_lora(trained.unet, "spatial", tmp_path / "spatial")
    weights = tmp_path / "spatial" / LORA_WEIGHT_NAME
    # a LoRA of another model: same module names, other widths
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    foreign = {k: torch.zeros(v.shape[0], v.shape[1] * 2) for k, v in load_file(weights).items()}
    save_file(foreign, str(tmp_path / "foreign.safetensors"), metadata=metadata)
    (tmp_path / "other").mkdir()
    (tmp_path / "foreign.safetensors").rename(tmp_path / "other" / LORA_WEIGHT_NAME)
    other = build_tiny_components()
    add_recapture_adapters(other.unet, LoRAConfig(rank=4))
    with pytest.raises(RecaptureError, match=r"size mismatch for .*same model.components and model.lora") as err:
        load_lora(other.unet, "spatial", tmp_path / "other")
    assert "\n" not in str(err.value)
    assert not [r for r in caplog.records if r.name.startswith("diffusers")]  # no dump of the state-dict error
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RecaptureError, match="truncated or corrupt"):
        load_lora(other.unet, "spatial", tmp_path / "spatial")


def test_a_lora_file_of_another_rank_loads_at_its_own_rank(tmp_path) -> None:
    """`generate` with another --model.lora.rank than the fit: the file's rank is used, not a traceback."""
    trained = build_tiny_components()
    add_recapture_adapters(trained.unet, LoRAConfig(rank=4))
    with torch.no_grad():
        for name, p in trained.unet.named_parameters():
            if "lora_B.spatial" in name:
                p.normal_()
    save_lora(trained.unet, "spatial", tmp_path / "spatial")
    other = build_tiny_components()
    add_recapture_adapters(other.unet, LoRAConfig(rank=8))
    load_lora(other.unet, "spatial", tmp_path / "spatial")
    got = dict(other.unet.named_parameters())
    for name, p in trained.unet.named_parameters():
        if ".spatial." in name:
            assert got[name].shape == p.shape and torch.equal(got[name].detach(), p.detach()), name
