"""The real recipe's paths on CPU with the tiny model: gradient checkpointing, precision, devices, caches.

Each test here failed before the fix it covers (issue "The real recipe runs end to end").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from recapture.adaptation import (
    ComponentsConfig,
    EDMConfig,
    adapter_parameters,
    build_tiny_components,
    encode_latents,
    weights_dtype,
)
from recapture.adaptation.encoding import AugmentConfig, encode_training_tensors
from recapture.cli import cli_main
from recapture.io import read_video
from recapture.training.datamodule import ReCaptureDataModule
from recapture.training.module import ReCaptureModule, StepSchedule
from recapture.utils import RecaptureError

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "--model.components.tiny", "true",  # the tiny random set (configs/demo.yaml ships the prior)
    "--trainer.max_steps", "2",
    "--model.sampling.num_inference_steps", "2",
    "--model.refine.num_inference_steps", "2",
    "--model.refine.strength", "0.5",
    "--data.num_frames", "3",
    "--data.size", "64",
    "--data.augment.pool_size", "1",
    "--data.augment.condition_draws", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.logger", "false",
]


@pytest.fixture(autouse=True)
def _chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")


def _demo_args(tmp_path: Path, command: str, *extra: str) -> list[str]:
    return [
        command, "--config", str(REPO / "configs" / "demo.yaml"), *SMALL,
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--data.anchor.cache_dir", str(tmp_path / "cache" / "anchors"),
        "--data.latent_cache_dir", str(tmp_path / "cache" / "latents"),
        *extra,
    ]


class _GradRecorder(Callback):
    """Keeps each step's LoRA gradients as Lightning computed them (backward after training_step)."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        grads = {}
        for name in ("spatial", "temporal"):
            for i, p in enumerate(adapter_parameters(pl_module.unet, name)):
                if p.grad is not None:
                    grads[f"{name}.{i}"] = p.grad.detach().clone()
        self.grads.append(grads)


def _lightning_grads(
    checkpointing: bool, skip_compute: bool, tmp_path: Path, compile_backend: str | None = None, steps: int = 2
) -> list[dict[str, torch.Tensor]]:
    seed_everything(0, verbose=False)
    module = ReCaptureModule(
        components=ComponentsConfig(pretrained=None, variant=None, tiny=True),
        objective=EDMConfig(conditioning_dropout=0.0),
        schedule=StepSchedule(1, 1),
        gradient_checkpointing=checkpointing,
        bypass_skip_compute=skip_compute,
        compile_unet=compile_backend is not None,
        compile_backend=compile_backend or "inductor",
        # lr 0: both runs see the same weights at every step, so their gradients must agree
        optimizer=lambda params: torch.optim.SGD(params, lr=0.0),
    )
    data = ReCaptureDataModule(video="example", num_frames=3, size=64, augment=AugmentConfig(pool_size=1, condition_draws=1),
                               latent_cache_dir=None, output_dir=str(tmp_path / f"anchor{checkpointing}{skip_compute}"))
    data.anchor.cache_dir = None
    recorder = _GradRecorder()
    trainer = Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
                      default_root_dir=str(tmp_path))
    trainer.fit(module, data)
    assert module.unet.is_gradient_checkpointing == checkpointing
    return recorder.grads


@pytest.mark.parametrize("skip_compute", [True, False])
def test_checkpointed_gradients_equal_plain_ones_through_the_lightning_loop(tmp_path: Path, skip_compute: bool) -> None:
    """The spatial step's bypass holds through Lightning's backward, recomputation included."""
    plain = _lightning_grads(False, skip_compute, tmp_path)
    checkpointed = _lightning_grads(True, skip_compute, tmp_path)
    assert len(plain) == len(checkpointed) == 2  # one temporal step, then one spatial step
    for step, (a, b) in enumerate(zip(plain, checkpointed, strict=True)):
        assert a.keys() == b.keys() and a, step
        kinds = {k.split(".")[0] for k, g in a.items() if g.abs().sum() > 0}
        assert kinds == {"temporal" if step == 0 else "spatial"}, step
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7, msg=f"step {step} {key}")


@pytest.mark.slow  # ~40 s: dynamo traces the UNet's forward and backward twice
def test_a_compiled_unet_trains_with_the_eager_gradients_in_two_graphs(tmp_path: Path) -> None:
    """model.compile_unet: checkpointing and the bypass (hooks, swapped forwards) trace without breaks.

    ``aot_eager`` runs dynamo and AOT autograd (the graphs inductor would compile) without generating
    code, so the gradients are the eager ones to float rounding.
    """
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = _lightning_grads(True, True, tmp_path, steps=4)
    compiled = _lightning_grads(True, True, tmp_path, compile_backend="aot_eager", steps=4)
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    torch._dynamo.reset()
    assert graphs == 2 and breaks == 0, (graphs, dict(counters["graph_break"]))  # temporal, spatial; no recompile
    assert len(eager) == len(compiled) == 4
    for step, (a, b) in enumerate(zip(eager, compiled, strict=True)):
        assert a.keys() == b.keys() and a, step
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=f"step {step} {key}")


def test_an_unknown_compile_backend_is_refused_with_the_closest_name() -> None:
    with pytest.raises(RecaptureError, match=r"compile_backend='indcutor'.*did you mean 'inductor'"):
        ReCaptureModule(components=ComponentsConfig(tiny=True), compile_unet=True, compile_backend="indcutor")


def test_fp16_vae_is_upcast_for_training_latents_as_at_sampling(one_thread) -> None:
    """SVD's VAE says force_upcast: training latents must be encoded in float32, as the pipeline does."""
    half = build_tiny_components()
    half.vae.register_to_config(force_upcast=True)
    half.vae.half()
    reference = build_tiny_components()
    reference.vae.load_state_dict({k: v.float() for k, v in half.vae.state_dict().items()})
    seen: list[torch.dtype] = []
    half.vae.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, 64, 64, generator=g)
    mask = torch.ones(2, 1, 64, 64)
    out = encode_training_tensors(frames, frames, mask, half, "cpu", AugmentConfig(pool_size=1, condition_draws=1),
                                  EDMConfig(), seed=0, progress=False)
    assert seen and set(seen) == {torch.float32}
    assert half.vae.dtype == torch.float16  # returned as it was
    torch.testing.assert_close(out.anchor_latents, encode_latents(reference.vae, frames), rtol=0, atol=0)


def test_latent_cache_key_includes_the_dtype() -> None:
    fp32 = ReCaptureModule(components=ComponentsConfig(pretrained=None, variant=None, tiny=True, dtype="float32"))
    bf16 = ReCaptureModule(components=ComponentsConfig(pretrained=None, variant=None, tiny=True, dtype="bfloat16"))
    assert fp32.components_id() != bf16.components_id()
    assert "bfloat16" in bf16.components_id()


def test_fp16_on_cpu_loads_as_bf16_or_fp32_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="recapture.adaptation.loading"):
        assert weights_dtype("float16", "cpu", "bf16-mixed") == torch.bfloat16
        assert weights_dtype("float16", torch.device("cpu"), "32-true") == torch.float32
    assert len([r for r in caplog.records if "float16 is slow on a CPU" in r.message]) == 2
    assert weights_dtype("float16", "cuda", "bf16-mixed") == torch.float16  # untouched off the CPU
    assert weights_dtype("float16") == torch.float16
    assert weights_dtype("bfloat16", "cpu", None) == torch.bfloat16
    module = ReCaptureModule(components=ComponentsConfig(pretrained=None, variant=None, tiny=True, dtype="float16"))
    parts = module.load_parts(device="cpu", precision="bf16-mixed")
    assert parts.unet.dtype == parts.vae.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in adapter_parameters(parts.unet, "temporal"))


def test_fit_then_generate_with_the_fit_seed_reproduces_the_video_bitwise(tmp_path: Path, monkeypatch) -> None:
    """Half-precision base weights (float16 on CPU -> bfloat16), fp32 LoRAs saved and loaded again."""
    monkeypatch.setenv("RECAPTURE_CPU_BF16", "1")  # bf16 even on a CPU that emulates it (tiny model: fast enough)
    half = ["--model.components.dtype", "float16", "--trainer.precision", "bf16-mixed"]
    fit = cli_main(_demo_args(tmp_path, "fit", *half))
    run = tmp_path / "run"
    assert fit.model.unet.dtype == torch.bfloat16
    cli_main(_demo_args(tmp_path, "generate", *half, "--seed", "0", "--output", str(tmp_path / "gen")))
    fitted = json.loads((run / "report.json").read_text())["frames_sha256"]
    regenerated = json.loads((tmp_path / "gen" / "report.json").read_text())["frames_sha256"]
    assert fitted == regenerated and set(fitted) == {"generated", "refined"}
    a, b = read_video(run / "generated.mp4").frames, read_video(tmp_path / "gen" / "generated.mp4").frames
    assert a.shape == b.shape and (a - b).abs().mean() < 0.01  # the H.264 files agree too (almost always bitwise)


def test_report_timings_are_this_runs_and_cache_hits_are_marked(tmp_path: Path) -> None:
    cli_main(_demo_args(tmp_path, "fit"))
    first = json.loads((tmp_path / "run" / "report.json").read_text())
    cli_main(_demo_args(tmp_path, "fit", "--trainer.default_root_dir", str(tmp_path / "run2")))
    second = json.loads((tmp_path / "run2" / "report.json").read_text())
    assert first["caches"] == {"anchor": "miss", "latents": "miss"}
    assert second["caches"] == {"anchor": "hit", "latents": "hit"}
    assert "anchor_depth_s" in first["timings_s"] and "anchor_load_s" in second["timings_s"]
    assert "anchor_depth_s" not in second["timings_s"]
    for report in (first, second):
        t = report["timings_s"]
        assert t["total_fit_s"] >= t["encode_s"] + t["train_s"] + t["generate_s"]


def test_every_stage_uses_the_chosen_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA "available", nothing may pick it by itself: the depth model runs where the run runs."""
    from recapture.depth import TransformersDepthSource
    from recapture.depth.transformers_backend import _resolve_device_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    estimator = TransformersDepthSource().build()
    assert _resolve_device_dtype(estimator.config, estimator.device)[0] == torch.device("cpu")
    assert _resolve_device_dtype(TransformersDepthSource(), "cuda:1")[0] == torch.device("cuda", 1)
    assert _resolve_device_dtype(TransformersDepthSource(device="cpu"), "cuda")[0].type == "cpu"


def test_sampling_places_the_encoders_on_the_unets_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """After training the VAE and CLIP encoder are on the CPU; sampling brings them to the UNet's device."""
    import recapture.adaptation.placement as placement
    from recapture.sampling import sampling_session

    calls = []
    original = placement.placed

    def spy(modules, device):  # noqa: ANN001, ANN202
        modules = list(modules)
        calls.append(([type(m).__name__ for m in modules], torch.device(device)))
        return original(modules, device)

    monkeypatch.setattr(placement, "placed", spy)
    parts = build_tiny_components()
    with sampling_session(parts, None) as device:
        pass
    assert calls == [(["AutoencoderKLTemporalDecoder", "CLIPVisionModelWithProjection"], device)]


def test_missing_weights_stop_the_run_before_any_heavy_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    orbit = ["fit", "--config", str(REPO / "configs" / "orbit.yaml"), "--trainer.accelerator", "cpu",
             "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run")]
    with pytest.raises(RecaptureError, match="stabilityai/stable-video-diffusion-img2vid.*huggingface-cli"):
        cli_main(orbit)
    assert not (tmp_path / "run" / "anchor.mp4").exists()  # nothing rendered
    with pytest.raises(RecaptureError, match=r"/no/such/svd.*does not exist"):
        cli_main([*orbit, "--model.components.pretrained", "/no/such/svd"])
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")  # never read: the depth model is resolved first
    with pytest.raises(RecaptureError, match="depth model 'nobody/no-depth'.*--data.depth PriorDepthSource"):
        cli_main([*orbit, "--data.video", str(clip), "--data.depth.model", "nobody/no-depth"])
