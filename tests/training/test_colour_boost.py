"""Training the VAE in a colour-boosted space: the colour matrix, the stored last layer, its fold, the weighted loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recapture.adaptation.prior import (
    VAESize,
    boost_output_colour,
    chroma_matrix,
    plain_vae,
    vae_reconstruction_loss,
)
from recapture.training.pretrain import VAEStage
from recapture.utils import RecaptureError


def _vae():
    return VAESize((32, 32)).build(0)


def _decode(vae, z: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    return vae.decode(z, num_frames=2).sample


def test_chroma_matrix_keeps_grey_and_the_mean_and_composes() -> None:
    m = chroma_matrix(3.0)
    pixel = torch.tensor([0.2, -0.4, 0.5])
    boosted = m @ pixel
    assert float(boosted.mean()) == pytest.approx(float(pixel.mean()), abs=1e-6)
    # the distance from the grey of the pixel's mean is scaled by exactly 3
    assert torch.allclose(boosted - boosted.mean(), 3 * (pixel - pixel.mean()), atol=1e-6)
    grey = torch.full((3,), 0.3)
    assert torch.allclose(m @ grey, grey, atol=1e-6)
    assert torch.allclose(chroma_matrix(2.0) @ chroma_matrix(3.0), chroma_matrix(6.0), atol=1e-5)
    assert torch.allclose(chroma_matrix(3.0) @ chroma_matrix(1 / 3), torch.eye(3), atol=1e-6)
    with pytest.raises(RecaptureError, match="must be > 0"):
        chroma_matrix(0.0)


def test_boost_stores_the_fresh_layer_and_unboosts_its_output() -> None:
    plain, boosted = _vae(), _vae()
    boost_output_colour(boosted, 4.0)
    layer = boosted.decoder.time_conv_out
    fresh = plain.decoder.time_conv_out
    # the optimiser's parameters are the fresh initialisation; the layer acts with chroma rows / 4
    assert torch.equal(layer.parametrizations.weight.original, fresh.weight)
    assert torch.equal(layer.parametrizations.bias.original, fresh.bias)
    unboost = chroma_matrix(0.25)
    assert torch.allclose(layer.weight, (unboost @ fresh.weight.reshape(3, -1)).reshape(fresh.weight.shape), atol=1e-6)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = _decode(boosted, z), _decode(plain, z)
    # the decoder's output is the fresh decoder's with its chroma scaled by 1/4 (time_conv_out is its last layer)
    assert torch.allclose(out, torch.einsum("oc,nchw->nohw", unboost, ref), atol=1e-5)
    trainable = {n for n, p in boosted.named_parameters() if "time_conv_out" in n}
    assert trainable == {"decoder.time_conv_out.parametrizations.weight.original",
                         "decoder.time_conv_out.parametrizations.bias.original"}


def test_fold_gives_a_plain_diffusers_vae_with_the_same_outputs(tmp_path: Path) -> None:
    from diffusers import AutoencoderKLTemporalDecoder

    vae = _vae()
    boost_output_colour(vae, 6.0)
    with torch.no_grad():
        vae.decoder.time_conv_out.parametrizations.weight.original.add_(0.01)  # as after some training
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = _decode(vae, z)
    copy = plain_vae(vae)
    assert set(copy.state_dict()) == set(_vae().state_dict())
    with torch.no_grad():
        assert torch.allclose(_decode(copy, z), before, atol=1e-6)
    copy.save_pretrained(tmp_path / "vae", safe_serialization=True)
    loaded = AutoencoderKLTemporalDecoder.from_pretrained(tmp_path / "vae")
    with torch.no_grad():
        assert torch.allclose(_decode(loaded, z), before, atol=1e-6)
    with torch.no_grad():  # a plain VAE: its copy is the same VAE
        assert torch.allclose(_decode(plain_vae(loaded), z), before, atol=1e-6)


def test_the_loss_weighs_chroma_errors_only() -> None:
    vae = _vae()
    video = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = vae_reconstruction_loss(vae, video, generator=torch.Generator().manual_seed(3))
        weighted = vae_reconstruction_loss(vae, video, generator=torch.Generator().manual_seed(3), chroma_weight=5.0)
    err = (plain.decoded - video) * 2  # in the VAE's [-1, 1] range
    luma = err.mean(2, keepdim=True)
    assert float(plain.reconstruction) == pytest.approx(float(err.abs().mean()), rel=1e-5)
    # the same error, its luminance kept and its distance from grey counted 5 times
    assert float(weighted.reconstruction) == pytest.approx(float((luma + 5 * (err - luma)).abs().mean()), rel=1e-5)
    assert torch.equal(weighted.decoded, plain.decoded)


def test_stage_schedule_and_bad_values() -> None:
    stage = VAEStage(vae=VAESize((32, 32)), colour_boost=6.0, colour_anneal=(100, 200))
    assert [stage.chroma_weight(s) for s in (0, 100, 150, 200, 500)] == pytest.approx([6, 6, 3.5, 1, 1])
    assert VAEStage(vae=VAESize((32, 32)), colour_boost=6.0).chroma_weight(10_000) == 6.0
    floor = VAEStage(vae=VAESize((32, 32)), colour_boost=6.0, colour_anneal=(0, 10), colour_final=3.0)
    assert [floor.chroma_weight(s) for s in (0, 5, 10, 99)] == pytest.approx([6, 4.5, 3, 3])
    assert VAEStage(vae=VAESize((32, 32))).chroma_weight(0) == 1.0
    with pytest.raises(RecaptureError, match="colour_boost=0"):
        VAEStage(vae=VAESize((32, 32)), colour_boost=0.0)
    with pytest.raises(RecaptureError, match=r"colour_anneal=\(200, 100\)"):
        VAEStage(vae=VAESize((32, 32)), colour_boost=6.0, colour_anneal=(200, 100))


def test_fixed_readout_is_balanced_frozen_and_saves_as_a_plain_vae(tmp_path: Path) -> None:
    from diffusers import AutoencoderKLTemporalDecoder

    from recapture.adaptation.prior import fix_readout

    vae = _vae()
    fix_readout(vae, gain=1.5, seed=0)
    dec = vae.decoder
    rows = dec.conv_out.weight.flatten(1)
    # three orthogonal rows of norm 1.5: every colour direction is read out with the same gain
    assert torch.allclose(rows @ rows.T, 2.25 * torch.eye(3), atol=1e-5)
    assert torch.linalg.svdvals(rows).tolist() == pytest.approx([1.5, 1.5, 1.5], abs=1e-5)
    assert torch.equal(dec.conv_out.bias, torch.zeros(3))
    # time_conv_out passes each frame through unchanged
    frames = torch.randn(1, 3, 5, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(dec.time_conv_out(frames), frames)
    frozen = {n for n, p in vae.named_parameters() if not p.requires_grad}
    assert frozen == {"decoder.conv_out.weight", "decoder.conv_out.bias",
                      "decoder.time_conv_out.weight", "decoder.time_conv_out.bias"}
    # the same seed gives the same readout; another seed another one
    again, other = _vae(), _vae()
    fix_readout(again, seed=0)
    fix_readout(other, seed=1)
    assert torch.equal(again.decoder.conv_out.weight, dec.conv_out.weight)
    assert not torch.allclose(other.decoder.conv_out.weight, dec.conv_out.weight)
    # nothing to fold: the saved VAE is a stock one with the same outputs
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    loaded = AutoencoderKLTemporalDecoder.from_pretrained(tmp_path / "vae")
    with torch.no_grad():
        assert torch.equal(_decode(loaded, z), _decode(vae, z))


def test_stage_with_a_fixed_readout_trains_everything_else() -> None:
    stage = VAEStage(vae=VAESize((32, 32)), fixed_readout=True)
    names = {id(p) for p in stage.trainable_parameters()}
    trained = {n for n, p in stage.vae.named_parameters() if id(p) in names}
    assert trained == {n for n, _ in stage.vae.named_parameters()} - {
        "decoder.conv_out.weight", "decoder.conv_out.bias", "decoder.time_conv_out.weight", "decoder.time_conv_out.bias"}
    before = stage.vae.decoder.conv_out.weight.clone()
    optimizer = torch.optim.AdamW(stage.trainable_parameters(), lr=1e-2)
    video = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    vae_reconstruction_loss(stage.vae, video).loss.backward()
    optimizer.step()
    assert torch.equal(stage.vae.decoder.conv_out.weight, before)
    assert stage.vae.decoder.conv_out.weight.grad is None
    with pytest.raises(RecaptureError, match="fixed_readout=true and model.colour_boost=6"):
        VAEStage(vae=VAESize((32, 32)), fixed_readout=True, colour_boost=6.0)
