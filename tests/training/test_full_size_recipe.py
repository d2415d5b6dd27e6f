"""The real recipe on CPU: `configs/orbit.yaml` with the FULL-SIZE SVD architecture (random weights).

The first thing every user runs. The set is built once from the published configs
(:func:`recapture.adaptation.full_size.write_random_svd`: hub layout, float32 and ``fp16`` variant
files) with a random Depth Anything V2 Small, then `recapture fit --config configs/orbit.yaml` runs
with only the weights, the video, the size, the step counts and the accelerator overridden, so
gradient checkpointing, bf16 precision (on a CPU with bf16 instructions; on one without, the run's
fallback to 32-true with its warning), the fp16 files and the real LoRA targets are all exercised;
then `recapture generate` with fit's seed must reproduce fit's video bit for bit.

About 13 GB on disk (removed afterwards) and 7 GB of memory; several minutes on 2 cores.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from recapture.cli import cli_main
from recapture.io import read_video
from recapture.training.precision import cpu_has_fast_bf16

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def full_size_models() -> Iterator[tuple[Path, Path]]:
    """(SVD img2vid directory, Depth Anything V2 Small directory), random weights, hub layout."""
    from recapture.adaptation.full_size import write_random_svd
    from recapture.depth.transformers_backend import write_random_depth_model

    root = Path(tempfile.mkdtemp(prefix="recapture-full-size-"))
    try:
        svd = write_random_svd(root / "stable-video-diffusion-img2vid")
        depth = write_random_depth_model(root / "Depth-Anything-V2-Small-hf")
        yield svd, depth
    finally:  # 13 GB: never left to pytest's tmp retention
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_random_full_size_set_is_the_published_architecture(full_size_models) -> None:
    svd, _ = full_size_models
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(json.loads((svd / "unet" / "config.json").read_text()))
    assert sum(p.numel() for p in unet.parameters()) == 1_524_623_082
    for part, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("image_encoder", "model")):
        assert (svd / part / f"{name}.safetensors").is_file() and (svd / part / f"{name}.fp16.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_orbit_recipe_runs_with_full_size_weights_on_cpu(full_size_models, tmp_path: Path, monkeypatch, caplog) -> None:
    svd, depth = full_size_models
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    from recapture.data.example import make_example_clip
    from recapture.io import write_video

    clip, _, _ = make_example_clip(num_frames=14, height=64, width=64)
    video = write_video(tmp_path / "clip.mp4", clip.frames, clip.fps)
    run = tmp_path / "run"
    args = [
        "--config", str(REPO / "configs" / "orbit.yaml"),
        "--model.components.pretrained", str(svd),
        "--data.depth.model", str(depth),
        "--data.video", str(video),
        "--data.size", "64",
        "--trainer.max_steps", "2",  # one temporal and one spatial step
        "--trainer.accelerator", "cpu",
        "--model.sampling.num_inference_steps", "1",
        "--model.refine.num_inference_steps", "1",
        "--trainer.default_root_dir", str(run),
    ]
    with caplog.at_level("INFO", logger="recapture"):
        fit = cli_main(["fit", *args])
    module = fit.model
    assert module.gradient_checkpointing and module.unet.is_gradient_checkpointing
    if cpu_has_fast_bf16():
        assert module.unet.dtype == torch.bfloat16  # fp16 files on a CPU under bf16-mixed
        assert "loading them as bfloat16" in caplog.text
    else:  # bf16 would be emulated (hundreds of times slower convolutions): the run falls back to float32, and says so
        assert str(fit.trainer.precision) == "32-true" and "running in 32-true instead" in caplog.text
        assert module.unet.dtype == torch.float32 and "loading them as float32" in caplog.text
    assert fit.trainer.global_step == 2
    del fit, module
    gc.collect()
    for name in ("anchor.mp4", "mask.mp4", "generated.mp4", "refined.mp4", "comparison.mp4", "videos.mp4",
                 "report.json", "config.yaml", "lora/spatial/pytorch_lora_weights.safetensors",
                 "lora/temporal/pytorch_lora_weights.safetensors", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert report["global_step"] == 2 and report["anchor"]["depth_source"].startswith("transformers:")
    assert report["timings_s"]["total_fit_s"] >= report["timings_s"]["encode_s"]

    cli_main(["generate", *args, "--seed", "0", "--output", str(tmp_path / "gen")])
    regenerated = json.loads((tmp_path / "gen" / "report.json").read_text())
    assert regenerated["frames_sha256"] == report["frames_sha256"]  # the frames, bit for bit
    a = read_video(run / "generated.mp4").frames
    b = read_video(tmp_path / "gen" / "generated.mp4").frames
    assert a.shape == b.shape == (14, 3, 64, 64) and (a - b).abs().mean() < 0.01
    assert (tmp_path / "gen" / "refined.mp4").is_file()
