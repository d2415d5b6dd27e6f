"""`recapture pretrain`: both stages run in-process on CPU, resume, cache latents as safetensors, export a loadable set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from recapture.adaptation import ComponentsConfig, encode_latents, load_components
from recapture.adaptation.prior import (
    ImageEncoderSize,
    UNetSize,
    VAESize,
    fit_scaling_factor,
    vae_reconstruction_loss,
)
from recapture.cli import cli_main
from recapture.data.procedural import make_clip, render_path
from recapture.training.pretrain import LRSchedule, verify_checksums
from recapture.utils import RecaptureError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "pretrain").glob("*.yaml"))
VAE_CONFIG = REPO / "configs" / "pretrain" / "recapture-tiny-vae.yaml"
UNET_CONFIG = REPO / "configs" / "pretrain" / "recapture-tiny-unet.yaml"

T, H, W = 4, 32, 48  # tiny clips: VAE factor 2 -> 16x24 latents

DATA = [
    "--data.num_frames", str(T), "--data.height", str(H), "--data.width", str(W),
    "--data.batch_size", "2", "--data.eval_clips", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
    "--data.supersample", "1",
]
CALLBACKS = [
    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
     "init_args": {"every_n_train_steps": 2, "save_last": True}},
    {"class_path": "recapture.training.pretrain.PretrainProgress", "init_args": {"every_n_steps": 1}},
    {"class_path": "recapture.training.pretrain.ExportPrior"},
]
TRAINER = ["--trainer.val_check_interval", "2", "--trainer.max_time", "null",
           "--trainer.callbacks", json.dumps(CALLBACKS)]


def _clip(index: int, split: str = "train", size: tuple[int, int] = (H, W), frames: int = T) -> torch.Tensor:
    clip = make_clip(split, index, frames, size)
    return render_path(clip.scene, clip.source, size)["video"]


def _run(root: Path, config: Path, steps: int, *extra: str):
    return cli_main([
        "pretrain", "--config", str(config), *DATA, *TRAINER,
        "--trainer.max_steps", str(steps),
        "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.save_dir", str(root),
        *extra,
    ])


VAE_TINY = ["--model.vae.block_out_channels", "[32, 32]", "--model.scaling_clips", "2", "--model.train_crop", "[16, 24]",
            "--model.lr_schedule.warmup_steps", "1", "--model.teacher_steps", "3", "--model.distill_steps", "5",
            "--model.teacher_width", "16"]


def _unet_tiny(vae_dir: Path) -> list[str]:
    return [
        "--model.vae_dir", str(vae_dir),
        "--model.unet.block_out_channels", "[32, 32]",
        "--model.image_encoder.hidden_size", "32", "--model.image_encoder.num_hidden_layers", "1",
        "--model.image_encoder.intermediate_size", "37", "--model.image_encoder.projection_dim", "32",
        "--model.card_samples", "1", "--model.card_steps", "2",
        "--model.lr_schedule.warmup_steps", "1",
        "--data.pool_clips", "4", "--data.encode_batch_size", "2",
    ]


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, one_thread) -> dict:  # noqa: ANN001
    """The VAE stage (4 steps), its resumption to 6 steps, and the UNet stage (4 steps) on its export."""
    root = tmp_path_factory.mktemp("pretrain")
    vae = _run(root / "vae", VAE_CONFIG, 4, *VAE_TINY)
    vae_record = json.loads((root / "vae" / "export" / "pretrain.json").read_text())
    resumed = _run(root / "vae", VAE_CONFIG, 6, *VAE_TINY, "--ckpt_path",
                   str(root / "vae" / "checkpoints" / "last.ckpt"))
    unet = _run(root / "unet", UNET_CONFIG, 4, *_unet_tiny(root / "vae" / "export"))
    return {"root": root, "vae": vae, "vae_record": vae_record, "resumed": resumed, "unet": unet}


# ---------------------------------------------------------------- configs and CLI
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_pretrain_config_parses(config: Path) -> None:
    from recapture.training.pretrain import PretrainDataModule, PriorStage
    from recapture.training.pretrain.cli import PretrainCLI

    cli = PretrainCLI(PriorStage, PretrainDataModule, subclass_mode_model=True, run=False, save_config_callback=None,
                      auto_configure_optimizers=False,
                      args=["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                            "--trainer.strategy", "auto"])  # the large recipes are for GPUs
    assert cli.trainer.max_steps > 0
    assert cli.model.stage in ("vae", "unet")
    assert cli.datamodule.height % 32 == 0 and cli.datamodule.width % 32 == 0


def test_help_lists_stage_options_and_resume(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["pretrain", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "recapture pretrain" in out and "--ckpt_path" in out and "--data.pool_clips" in out


def test_unet_stage_without_vae_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecaptureError, match="run the VAE stage first"):
        _run(tmp_path / "run", UNET_CONFIG, 1, *_unet_tiny(tmp_path / "missing"))


# ---------------------------------------------------------------- VAE stage and resume
def test_vae_stage_exports_a_scaled_vae(runs: dict) -> None:
    from diffusers import AutoencoderKLTemporalDecoder

    export = runs["root"] / "vae" / "export"  # the resumed run rewrote it at step 6
    vae = AutoencoderKLTemporalDecoder.from_pretrained(str(export / "vae"))
    assert len(vae.config.block_out_channels) == 2
    z = encode_latents(vae, _clip(0))
    # the latents of training clips have about unit std (fitted on the first training clips)
    assert 0.5 < float(z.std()) < 2.0
    assert vae.config.scaling_factor == pytest.approx(runs["resumed"].model.vae.config.scaling_factor)
    for name in ("model_card.md", "loss_curves.png", "pretrain.json", "checksums.json"):
        assert (export / name).is_file()


def test_resume_continues_at_the_checkpoint_step(runs: dict) -> None:
    first, resumed = runs["vae_record"], json.loads((runs["root"] / "vae" / "export" / "pretrain.json").read_text())
    assert first["steps"] == 4 and [h["step"] for h in first["history"]] == [1, 2, 3, 4]
    assert resumed["steps"] == 6
    # the history came back from the checkpoint and continued: steps 5 and 6 only were trained again
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3, 4, 5, 6]
    assert resumed["history"][:4] == first["history"]
    assert resumed["data"]["clips_seen"] == 12
    assert runs["resumed"].trainer.global_step == 6
    assert runs["resumed"].datamodule.consumed_clips() == 12
    # the teacher was trained once, before step 0, and came back frozen from the checkpoint
    first_model, resumed_model = runs["vae"].model, runs["resumed"].model
    assert first_model.teacher_trained_here and not resumed_model.teacher_trained_here
    assert bool(resumed_model.teacher_trained)
    first_teacher, resumed_teacher = first_model.teacher.state_dict(), resumed_model.teacher.state_dict()
    assert list(first_teacher) == list(resumed_teacher)
    for name, a in first_teacher.items():
        assert torch.equal(a, resumed_teacher[name]), name
    assert not any(p.requires_grad for p in resumed_model.teacher.parameters())
    # steps 1-5 distilled from it (the encoder's latent regression logged, no KL), step 6 trained end to end
    logged, later = runs["vae"].trainer.logged_metrics, runs["resumed"].trainer.logged_metrics
    assert "train/distill_latent" in logged and "train/kl" not in logged
    assert "train/kl" in later


# ---------------------------------------------------------------- UNet stage and the set
def test_latent_cache_is_safetensors_of_the_trained_vae(runs: dict) -> None:
    from safetensors import safe_open

    cache = runs["root"] / "unet" / "latent_cache"
    files = sorted(cache.iterdir())
    assert [f.name.split("-")[0] for f in files] == ["eval", "train"]
    assert all(f.suffix == ".safetensors" for f in files)
    train = next(f for f in files if f.name.startswith("train"))
    with safe_open(str(train), framework="pt") as f:
        assert set(f.keys()) == {"latents", "cond_latents", "image_embeds", "index"}
        latents, cond = f.get_tensor("latents"), f.get_tensor("cond_latents")
        embeds = f.get_tensor("image_embeds")
    assert latents.shape == (4, T, 4, H // 2, W // 2)
    assert cond.shape == (4, 2, 4, H // 2, W // 2) and embeds.shape == (4, 1, 32)
    assert not torch.equal(cond[:, 0], cond[:, 1])  # two noise-augmentation draws
    # the cached latents are the exported VAE's (with its scaling factor) of training clip 0
    vae = runs["unet"].model.vae
    torch.testing.assert_close(latents[0], encode_latents(vae, _clip(0)), atol=1e-4, rtol=1e-4)


def test_final_set_loads_and_samples(runs: dict) -> None:
    from recapture.sampling import SamplingConfig, generate

    export = runs["root"] / "unet" / "export"
    parts = load_components(ComponentsConfig(pretrained=str(export), variant=None, num_frames=T))
    assert parts.unet.config.num_frames == T and parts.unet.config.sample_size == H // 2
    assert parts.unet.config.cross_attention_dim == parts.image_encoder.config.projection_dim == 32
    trained = runs["unet"].model.unet.state_dict()
    for name, value in parts.unet.state_dict().items():
        torch.testing.assert_close(value, trained[name].cpu())
    image = torch.rand(3, H, W)
    out = generate(parts, image, T, SamplingConfig(num_inference_steps=2), adapters=None, progress=False)
    assert out.frames.shape == (T, 3, H, W) and torch.isfinite(out.frames).all()
    assert out.latents.shape == (T, 4, H // 2, W // 2)


def test_final_set_loads_in_the_stock_pipeline(runs: dict) -> None:
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(str(runs["root"] / "unet" / "export"))
    assert pipe.vae.config.scaling_factor != 0.18215


def test_checksums_match_the_files(runs: dict, tmp_path: Path) -> None:
    import shutil

    export = runs["root"] / "unet" / "export"
    table = json.loads((export / "checksums.json").read_text())["files"]
    assert "unet/diffusion_pytorch_model.safetensors" in table and "model_card.md" in table
    assert verify_checksums(export) == []
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    (copy / "model_card.md").write_text("changed")
    (copy / "extra.txt").write_text("x")
    assert verify_checksums(copy) == ["extra.txt", "model_card.md"]


def test_model_card_records_both_stages(runs: dict) -> None:
    export = runs["root"] / "unet" / "export"
    card = (export / "model_card.md").read_text()
    record = json.loads((export / "pretrain.json").read_text())
    assert [r["stage"] for r in record["previous_stages"]] == ["vae"]
    assert "recapture pretrain --config" in card and "UNetStage" in card and "VAEStage" in card
    assert "vae_eval_psnr_db" in card and "sample_psnr_db" in card
    assert (export / "samples.png").is_file() and (export / "loss_curves.png").is_file()
    assert record["data"]["pool_clips"] == 4 and record["steps"] == 4
    assert math.isfinite(record["figures"]["sample_psnr_db"])
    # the card lists the sha256 of every weights file, equal to checksums.json's
    table = json.loads((export / "checksums.json").read_text())["files"]
    weights = {k: v for k, v in table.items() if k.endswith(".safetensors")}
    assert {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"} <= set(weights)
    for name, digest in weights.items():
        assert f"| `{name}` | `{digest}` |" in card


# ---------------------------------------------------------------- plain-torch pieces
def test_sizes_build_the_real_classes_consistently() -> None:
    unet = UNetSize(block_out_channels=(32, 64)).build(latent_channels=4, cross_attention_dim=32, num_frames=4,
                                                        sample_size=8)
    assert unet.config.in_channels == 8 and unet.config.out_channels == 4
    assert unet.config.projection_class_embeddings_input_dim == 3 * unet.config.addition_time_embed_dim
    assert unet.config.num_attention_heads == (1, 2)
    assert VAESize((32, 64, 64)).factor == 4 and VAESize((32, 64, 64, 64)).factor == 8
    a, b = ImageEncoderSize(hidden_size=32, projection_dim=32).build(3), ImageEncoderSize(hidden_size=32, projection_dim=32).build(3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(RecaptureError, match="multiples of 32"):
        VAESize((16, 32)).build()


def test_vae_loss_trains_and_scaling_gives_unit_std(one_thread) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    video = _clip(3, size=(16, 16), frames=2)[None]
    vae = VAESize((32, 32)).build(0)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        out = vae_reconstruction_loss(vae, video, kl_weight=1e-6)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.reconstruction))
    assert losses[-1] < 0.6 * losses[0]
    scale = fit_scaling_factor(vae, video)
    vae.register_to_config(scaling_factor=scale)
    assert float(encode_latents(vae, video[0]).std()) == pytest.approx(1.0, rel=1e-3)


def test_lr_schedule_warms_up_and_decays() -> None:
    s = LRSchedule(warmup_steps=10, decay="cosine", final_ratio=0.1)
    assert s.factor(0, 100) == pytest.approx(1 / 11)
    assert s.factor(10, 100) == pytest.approx(1.0)
    assert s.factor(100, 100) == pytest.approx(0.1)
    assert LRSchedule(warmup_steps=0, decay="constant").factor(50, 100) == 1.0
