"""SVD components: tiny set, save/load through the real from_pretrained path, CLIP preprocessing."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from diffusers import StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel
from PIL import Image

from recapture.adaptation import (
    ComponentsConfig,
    PeftUNetSpatioTemporalConditionModel,
    add_recapture_adapters,
    build_tiny_components,
    clip_preprocess,
    encode_latents,
    load_components,
    require_peft,
    save_components,
)
from recapture.utils import RecaptureError


def test_tiny_components_are_small_and_deterministic(tiny, unet_inputs, run_unet) -> None:
    n_params = sum(p.numel() for p in tiny.unet.parameters())
    assert n_params < 2_000_000
    assert tiny.vae_scale_factor == 8
    again = build_tiny_components(seed=0)
    other = build_tiny_components(seed=1)
    x = unet_inputs()
    with torch.no_grad():
        torch.testing.assert_close(run_unet(tiny.unet, x), run_unet(again.unet, x), rtol=1e-5, atol=1e-5)
        assert not torch.equal(run_unet(tiny.unet, x), run_unet(other.unet, x))
    assert tiny.image_encoder.config.projection_dim == tiny.unet.config.cross_attention_dim


def test_tiny_vae_latents_have_unit_std(tiny) -> None:
    # Trap 1 of the spec: random VAE latents have std ~0.2 unless the scaling factor corrects it.
    g = torch.Generator().manual_seed(5)
    frames = torch.nn.functional.interpolate(
        torch.rand(6, 3, 4, 4, generator=g), size=(64, 64), mode="bilinear"
    )
    z = encode_latents(tiny.vae, frames)
    assert z.shape == (6, 4, 8, 8)
    assert 0.6 < z.std().item() < 1.6


def test_save_load_roundtrip_through_from_pretrained(tiny, tiny_dir, unet_inputs, run_unet, caplog) -> None:
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNetSpatioTemporalConditionModel"]
    assert json.loads((tiny_dir / "unet" / "config.json").read_text())["_class_name"] == (
        "UNetSpatioTemporalConditionModel"
    )
    with caplog.at_level(logging.INFO, logger="recapture.adaptation.loading"):
        loaded = load_components(
            ComponentsConfig(pretrained=str(tiny_dir))
        )  # fp16 variant absent: falls back
    assert "variant" in caplog.text
    assert isinstance(loaded.unet, PeftUNetSpatioTemporalConditionModel)
    assert loaded.vae.config.scaling_factor == pytest.approx(tiny.vae.config.scaling_factor)
    x = unet_inputs()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        # Same weights; CPU kernels may differ in the last bits between instances (memory alignment).
        same = {"rtol": 1e-5, "atol": 1e-5}
        torch.testing.assert_close(run_unet(loaded.unet, x), run_unet(tiny.unet, x), **same)
        torch.testing.assert_close(encode_latents(loaded.vae, image), encode_latents(tiny.vae, image), **same)
        pixels = clip_preprocess(image)
        emb = loaded.image_encoder(pixels).image_embeds
        torch.testing.assert_close(emb, tiny.image_encoder(pixels).image_embeds, **same)
    state, loaded_state = tiny.unet.state_dict(), loaded.unet.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert loaded.scheduler.config.use_karras_sigmas


def test_saved_dir_loads_with_stock_pipeline(tiny_dir) -> None:
    pipe = StableVideoDiffusionPipeline.from_pretrained(tiny_dir)
    assert type(pipe.unet) is UNetSpatioTemporalConditionModel


def test_load_dtype_and_num_frames(tiny_dir, tmp_path) -> None:
    loaded = load_components(ComponentsConfig(pretrained=str(tiny_dir), variant=None, dtype="bfloat16"))
    assert loaded.unet.dtype == torch.bfloat16 and loaded.num_frames_default == 14
    assert loaded.image_encoder.dtype == torch.bfloat16
    xt_dir = tmp_path / "stable-video-diffusion-img2vid-xt"
    xt_dir.symlink_to(tiny_dir, target_is_directory=True)
    assert load_components(ComponentsConfig(pretrained=str(xt_dir))).num_frames_default == 25
    xt = load_components(ComponentsConfig(tiny=True, num_frames=25))
    assert xt.num_frames_default == 25


@pytest.mark.parametrize(
    "config, match",
    [
        (ComponentsConfig(pretrained="/nonexistent/svd-weights"), "does not exist"),
        (ComponentsConfig(pretrained="./relative/missing"), "does not exist"),
        (ComponentsConfig(tiny=True, dtype="float64"), "unknown dtype"),
        (ComponentsConfig(pretrained=None), "empty"),
    ],
)
def test_load_bad_input(config, match) -> None:
    with pytest.raises(RecaptureError, match=match):
        load_components(config)


def test_uncached_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RecaptureError, match="recapture-test/no-such-svd"):
        load_components(ComponentsConfig(pretrained="recapture-test/no-such-svd", variant=None))


def test_save_refuses_unet_with_adapters(tiny, tmp_path) -> None:
    add_recapture_adapters(tiny.unet)
    with pytest.raises(RecaptureError, match="save_lora"):
        save_components(tiny, tmp_path / "svd")
    assert not (tmp_path / "svd").exists()


def test_peft_unet_is_chosen_at_construction_not_by_a_class_swap(tiny_dir) -> None:
    """A stock UNet keeps its class (an error names the fix); the PEFT class loads the same weights."""
    unet = UNetSpatioTemporalConditionModel.from_pretrained(tiny_dir, subfolder="unet")
    assert not hasattr(unet, "add_adapter")
    peft = PeftUNetSpatioTemporalConditionModel.from_pretrained(tiny_dir, subfolder="unet")
    assert require_peft(peft) is peft and hasattr(peft, "load_lora_adapter")
    stock = unet.state_dict()
    assert all(torch.equal(v, stock[k]) for k, v in peft.state_dict().items()) and peft.state_dict().keys() == stock.keys()
    for call in (require_peft, add_recapture_adapters):
        with pytest.raises(RecaptureError, match="PeftUNetSpatioTemporalConditionModel.from_pretrained"):
            call(unet)
    assert type(unet) is UNetSpatioTemporalConditionModel and not hasattr(unet, "add_adapter")  # unchanged
    with pytest.raises(RecaptureError, match="UNetSpatioTemporalConditionModel"):
        require_peft(torch.nn.Linear(2, 2))


def test_clip_preprocess_matches_pipeline_encode_image(tiny) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    pipe = tiny.to_pipeline()
    with torch.no_grad():
        expected = pipe._encode_image(Image.fromarray(array), "cpu", 1, False)
        image = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
        pixels = clip_preprocess(image)
        got = tiny.image_encoder(pixels).image_embeds.unsqueeze(1)
    assert pixels.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # Normalisation itself, on a constant image (resize is exact there).
    const = clip_preprocess(torch.full((1, 3, 32, 32), 0.5))
    expected_const = (0.5 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711]
    )
    torch.testing.assert_close(const[0, :, 100, 100], expected_const)


def test_clip_preprocess_rejects_bad_shape() -> None:
    with pytest.raises(RecaptureError, match=r"\(B, 3, H, W\)"):
        clip_preprocess(torch.rand(3, 64, 64))
