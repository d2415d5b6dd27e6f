"""The shipped prior `recapture-tiny`: loads by name, matches its checksums and card, and does its job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from recapture import hub
from recapture.adaptation import ComponentsConfig, load_components
from recapture.checksums import verify_checksums
from recapture.utils import RecaptureError

REPO = Path(__file__).resolve().parents[2]
ASSET = hub.ASSETS / "recapture-tiny"


def test_loads_by_name_with_its_clip_length_and_size_budget() -> None:
    parts = load_components(ComponentsConfig(pretrained="recapture-tiny", variant=None))
    assert parts.num_frames_default == 8
    assert parts.vae_scale_factor == 4 and parts.vae.config.scaling_factor != 0.18215
    assert parts.unet.config.in_channels == 2 * parts.vae.config.latent_channels
    weights = sum(f.stat().st_size for f in ASSET.rglob("*.safetensors"))
    assert weights <= 20e6, f"{weights / 1e6:.1f} MB of weights (budget 20 MB)"


def test_checksums_match_the_files_and_the_model_card() -> None:
    assert verify_checksums(ASSET) == []
    card = (ASSET / "model_card.md").read_text()
    table = json.loads((ASSET / "checksums.json").read_text())["files"]
    weights = {k: v for k, v in table.items() if k.endswith(".safetensors")}
    assert len(weights) == 3  # unet, vae, image encoder
    for name, digest in weights.items():
        assert f"| `{name}` | `{digest}` |" in card, name
    assert "recapture pretrain --config configs/pretrain/recapture-tiny-vae.yaml" in card


def test_a_tampered_install_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "recapture-tiny"
    shutil.copytree(ASSET, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(hub, "ASSETS", tmp_path)
    with pytest.raises(RecaptureError, match=r"does not match its checksums.json \(unet/diffusion_pytorch_model"):
        load_components(ComponentsConfig(pretrained="recapture-tiny", variant=None))
    shutil.rmtree(copy)
    with pytest.raises(RecaptureError, match="is not installed"):
        load_components(ComponentsConfig(pretrained="recapture-tiny", variant=None))


def test_the_prior_reconstructs_and_continues_a_held_out_clip() -> None:
    """Unlike random weights, the prior decodes pixels and keeps the first frame it is given."""
    from recapture.data.procedural.dataset import ProceduralVideoDataset
    from recapture.metrics import psnr
    from recapture.sampling import SamplingConfig, generate

    torch.set_num_threads(min(2, torch.get_num_threads()))
    parts = load_components(ComponentsConfig(pretrained="recapture-tiny", variant=None))
    clip = ProceduralVideoDataset(split="eval", num_clips=1, supersample=2, with_geometry=False,
                                  with_target=False)[0]["video"]
    from recapture.adaptation import encode_latents
    from recapture.sampling.decode import decode_latents

    with torch.no_grad():
        decoded = decode_latents(parts.vae, encode_latents(parts.vae, clip), clip.shape[0])
    assert float(psnr(decoded, clip).mean()) > 18.0  # the model card has the held-out mean
    out = generate(parts, clip[0], clip.shape[0], SamplingConfig(num_inference_steps=8, seed=0), adapters=None,
                   progress=False).frames
    assert float(psnr(out[:1], clip[:1]).mean()) > 16.0  # the prompt frame comes back


def test_the_vae_keeps_colour() -> None:
    """A held-out clip's colours survive encoding and decoding (at least half of its saturation)."""
    from recapture.adaptation.prior import reconstruct
    from recapture.data.procedural.dataset import ProceduralVideoDataset
    from recapture.training.pretrain.quality import chroma_r2, reconstruction_colour, saturation

    parts = load_components(ComponentsConfig(pretrained="recapture-tiny", variant=None))
    clip = ProceduralVideoDataset(split="eval", num_clips=1, supersample=2, with_geometry=False,
                                  with_target=False)[0]["video"]
    assert saturation(clip) > 0.05  # the scene is coloured
    assert reconstruction_colour(parts.vae, clip[None]) > 0.5
    # and the hues are right, not only the saturation (a grey VAE scores <= 0 here)
    with torch.no_grad():
        assert chroma_r2(reconstruct(parts.vae, clip[None]), clip[None]) > 0.3


@pytest.mark.slow  # one held-out kubric-mini scene through the whole method with the prior: ~45 s
def test_the_method_with_the_prior_beats_the_anchor_on_a_held_out_scene(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Fine-tuned with the shipped prior, the generated video is closer to the exact novel view than the
    anchor over all pixels (the issue's test), and the refined one too; in the anchor's holes both are
    far better than the anchor (black there).

    The scene is scn02903 of the Table 3 benchmark (held-out seed 100003): its move uncovers a third of
    the view (anchor coverage 60%), the case the method is for. On a scene whose holes are a few
    percent of the pixels the exact anchor can score higher over all pixels, since its visible pixels
    are exact and the tiny prior regenerates them soft: scn02900 (8% holes) at 100 steps gives
    generated 17.48 dB against the anchor's 17.91 (README: 8-scene means at 400 steps, generated
    18.93, refined 17.64, anchor 15.63; generated above the anchor in 8 of 8 scenes)."""
    import yaml

    from recapture.cli import cli_main
    from recapture.data.kubric import write_kubric_mini

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = REPO / "configs" / "benchmarks" / "kubric_mini_prior.yaml"
    mini = yaml.safe_load(config.read_text())["kubric"]["mini"]  # the benchmark's own scenes, scene 3 only
    root, out = tmp_path / "kubric-mini", tmp_path / "bench"
    write_kubric_mini(root, mini["num_scenes"], mini["num_frames"], tuple(mini["size"]), mini["seed"],
                      supersample=mini["supersample"], only=[3])
    cli_main(["benchmark", "--config", str(config), "--kubric.root", str(root), "--kubric.output", str(out),
              "--kubric.scenes", "scn02903", "--kubric.ablation", "false", "--trainer.max_steps", "100",
              "--data.latent_cache_dir", str(tmp_path / "latents"), "--data.anchor.cache_dir", str(tmp_path / "anchors")])
    record = json.loads((out / "scenes" / "scn02903.json").read_text())
    rows = record["metrics"]
    assert 0.5 < record["anchor_coverage"] < 0.7, record["anchor_coverage"]
    # PSNR against the scene's exact ground-truth novel view, all pixels (measured at 100 steps:
    # generated 19.53, refined 18.07, anchor 12.91) and the anchor's holes (18.73 / 17.66 / 4.19)
    assert rows["generated"]["psnr"] > rows["anchor"]["psnr"] + 3.0, rows
    assert rows["recapture"]["psnr"] > rows["anchor"]["psnr"] + 3.0, rows
    assert rows["generated"]["psnr_occ"] > rows["anchor"]["psnr_occ"] + 10.0, rows
    assert rows["recapture"]["psnr_occ"] > rows["anchor"]["psnr_occ"] + 10.0, rows
    run = out / "runs" / "scn02903"
    assert (run / "generated.mp4").is_file() and (run / "refined.mp4").is_file()
