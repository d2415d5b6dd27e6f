"""The Lightning layer as users run it: configs, `recapture fit/anchor/generate`, resume, outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recapture.cli import cli_main
from recapture.io import read_video

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
MAIN_CONFIGS = [p for p in CONFIGS if p.parent.name == "configs"]
OVERLAYS = [p for p in CONFIGS if p.parent.name in ("trajectories", "loggers")]

# a fast variant of the demo: few steps, few denoising steps
FAST = [
    "--model.components.tiny", "true",  # the tiny random set (configs/demo.yaml ships the prior)
    "--trainer.max_steps", "4",
    "--model.sampling.num_inference_steps", "4",
    "--model.refine.num_inference_steps", "4",
    "--model.refine.strength", "0.5",
    "--data.num_frames", "4",
    "--data.size", "128",
    "--data.augment.pool_size", "2",
    "--data.augment.condition_draws", "1",
    "--trainer.enable_progress_bar", "false",
]


def _fast_args(tmp_path: Path, command: str = "fit", *extra: str) -> list[str]:
    return [
        command,
        "--config", str(REPO / "configs" / "demo.yaml"),
        *FAST,
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--data.anchor.cache_dir", str(tmp_path / "cache" / "anchors"),
        "--data.latent_cache_dir", str(tmp_path / "cache" / "latents"),
        *extra,
    ]


@pytest.fixture(autouse=True)
def _chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # wandb/ and other relative outputs stay in tmp
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.mark.parametrize("config", MAIN_CONFIGS, ids=lambda p: p.name)
def test_main_configs_parse(config: Path) -> None:
    cli = _parse(["--config", str(config)])
    assert cli.datamodule.num_frames in (8, 14, 25)
    assert cli.model.lora.rank > 0
    assert cli.trainer.max_steps > 0


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_overlays_stack_on_demo(overlay: Path) -> None:
    cli = _parse(["--config", str(REPO / "configs" / "demo.yaml"), "--config", str(overlay)])
    if overlay.parent.name == "trajectories":
        assert cli.datamodule.trajectory.preset == overlay.stem
        # the overlay's trajectory builds
        assert cli.datamodule.trajectory.build(5).c2w.shape == (5, 4, 4)


LOGGER_OVERLAYS = [p for p in OVERLAYS if p.parent.name == "loggers"]


@pytest.mark.parametrize("overlay", LOGGER_OVERLAYS, ids=lambda p: p.name)
@pytest.mark.parametrize("config", MAIN_CONFIGS, ids=lambda p: p.name)
def test_logger_overlays_stack_on_every_main_config(config: Path, overlay: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    cli = _parse(["--config", str(config), "--config", str(overlay)])
    if overlay.stem == "csv":
        assert isinstance(cli.trainer.logger, CSVLogger)
    else:
        assert cli.trainer.logger is None


@pytest.mark.parametrize("overlay", LOGGER_OVERLAYS, ids=lambda p: p.name)
def test_fit_runs_with_each_logger_overlay(tmp_path: Path, overlay: Path) -> None:
    """The documented overlays run a whole fit (none.yaml once crashed at the start of training)."""
    fit = cli_main(_fast_args(tmp_path, "fit", "--config", str(overlay), "--trainer.max_steps", "2"))
    assert fit.trainer.global_step == 2 and (tmp_path / "run" / "report.json").is_file()
    if overlay.stem == "csv":
        metrics = list((tmp_path / "runs").rglob("metrics.csv"))
        assert len(metrics) == 1 and "eval/anchor_psnr" in metrics[0].read_text()  # the run logged to it


def _parse(args: list[str]):
    """Parse and instantiate (the model loads nothing until used) without running."""
    from recapture.training.cli import ReCaptureCLI, ReCaptureTrainer
    from recapture.training.datamodule import ReCaptureDataModule
    from recapture.training.module import ReCaptureModule

    return ReCaptureCLI(ReCaptureModule, ReCaptureDataModule, trainer_class=ReCaptureTrainer, args=args,
                        run=False, save_config_callback=None)


def test_config_typo_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--data.trajectroy.amount", "3"])
    err = capsys.readouterr().err
    assert "trajectroy" in err


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    cli_main(["--help"])
    out = capsys.readouterr().out
    for name in ("fit", "anchor", "generate", "trajectory", "evaluate"):
        assert f"  {name}" in out
    with pytest.raises(SystemExit):
        cli_main(["anchor", "--help"])
    assert "--output" in capsys.readouterr().out


def test_anchor_command_writes_outputs(tmp_path: Path) -> None:
    cli = cli_main(_fast_args(tmp_path, "anchor", "--output", str(tmp_path / "anchor")))
    out = tmp_path / "anchor"
    for name in ("anchor.mp4", "mask.mp4", "preview.mp4", "trajectory.json", "report.json"):
        assert (out / name).is_file(), name
    anchor = read_video(out / "anchor.mp4")
    assert anchor.frames.shape[0] == 4
    assert set(cli.trainer.command_result) >= {"anchor", "mask", "preview", "report"}
    assert all(Path(p).parent == out for p in cli.trainer.command_result.values())


@pytest.mark.slow
def test_demo_fit_end_to_end_resume_and_generate(tmp_path: Path) -> None:
    """`recapture fit` writes every output; resuming continues at the right step; `generate` reproduces."""
    # no dirpath: checkpoints must land in <default_root_dir>/checkpoints with last.ckpt
    ckpt_args = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps", "2",
    ]
    cli = cli_main(_fast_args(tmp_path, "fit", *ckpt_args))
    run = tmp_path / "run"
    expected = ["anchor.mp4", "mask.mp4", "preview.mp4", "trajectory.json", "generated.mp4", "refined.mp4",
                "comparison.mp4", "videos.mp4", "config.yaml", "report.json",
                "lora/spatial/pytorch_lora_weights.safetensors", "lora/temporal/pytorch_lora_weights.safetensors"]
    for name in expected:
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.partial*")), "half-written files left behind"
    assert cli.trainer.global_step == 4

    import json

    report = json.loads((run / "report.json").read_text())
    assert report["global_step"] == 4
    assert {"generate_s", "refine_s", "train_s"} <= set(report["timings_s"])
    assert "anchor_psnr" in report["metrics"] and "temporal_flickering" in report["metrics"]
    # the example clip has an exact novel view: the video and the anchor are scored against it,
    # and the anchor's black holes score far below its known pixels
    truth = {k: report["metrics"][k] for k in ("truth_psnr", "truth_psnr_holes", "anchor_truth_psnr",
                                                 "anchor_truth_psnr_holes", "generated_truth_psnr",
                                                 "generated_truth_psnr_holes")}
    assert truth["anchor_truth_psnr_holes"] < truth["anchor_truth_psnr"], truth
    # the frame strip: 4 columns (source | anchor | generated | refined) x 3 rows (first, middle, last frame)
    from PIL import Image

    strip = Image.open(run / "strip.png")
    frame_h, frame_w = 64, 128  # --data.size 128 on the 3:2 example clip
    assert report["files"]["strip"] == str(run / "strip.png")
    assert strip.width > 4 * frame_w and 3 * frame_h < strip.height < 3 * (frame_h + 40)

    # W&B offline run directory holds the logged videos
    wandb_media = list((tmp_path / "wandb").glob("offline-run-*/files/media/videos/**/*.mp4"))
    assert wandb_media, "no video logged to the offline W&B run"

    # checkpoints hold only LoRA weights, and resuming continues at the saved step
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["state_dict"] and all("lora_" in k for k in state["state_dict"])
    assert state["global_step"] == 4
    cli2 = cli_main(_fast_args(tmp_path, "fit", *ckpt_args, "--trainer.max_steps", "6", "--ckpt_path", str(last)))
    assert cli2.trainer.global_step == 6
    assert cli2.trainer.fit_loop.epoch_loop._batches_that_stepped == 6

    # generate from the saved LoRAs: same seed -> same video, twice
    a = tmp_path / "gen_a"
    b = tmp_path / "gen_b"
    cli_main(_fast_args(tmp_path, "generate", "--output", str(a), "--seed", "7"))
    cli_main(_fast_args(tmp_path, "generate", "--output", str(b), "--seed", "7"))
    va, vb = read_video(a / "generated.mp4").frames, read_video(b / "generated.mp4").frames
    assert torch.equal(va, vb)
    assert (a / "refined.mp4").is_file() and (a / "comparison.mp4").is_file()


def test_interrupted_generation_leaves_no_final_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recapture.sampling as sampling

    def broken(*args, **kwargs):
        raise KeyboardInterrupt("simulated interruption during sampling")

    monkeypatch.setattr(sampling, "generate", broken)
    # Lightning turns Ctrl-C into a graceful shutdown (SystemExit)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        cli_main(_fast_args(tmp_path, "fit", "--trainer.max_steps", "1"))
    run = tmp_path / "run"
    assert not (run / "generated.mp4").exists()
    assert not (run / "refined.mp4").exists()
    assert not list(run.rglob("*.partial*"))


def test_video_shorter_than_clip_is_a_clear_error(tmp_path: Path) -> None:
    from recapture.io import write_video
    from recapture.utils import RecaptureError

    clip = tmp_path / "short.mp4"
    write_video(clip, torch.rand(3, 3, 64, 64), fps=8)
    with pytest.raises(RecaptureError, match="3 frames"):
        cli_main(_fast_args(tmp_path, "anchor", "--data.video", str(clip), "--data.num_frames", "14",
                            "--data.size", "null"))


def test_console_user_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from recapture.cli import main; main()", "trajectory", "--trajectory.file",
         str(tmp_path / "missing.json"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "missing.json" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_every_config_file_is_parsed_by_some_test() -> None:
    """Main configs and overlays are parsed here; benchmarks and sweeps in tests/benchmark/test_sweep.py;
    pretraining recipes in tests/training/test_pretrain.py."""
    groups = {"configs", "trajectories", "loggers", "benchmarks", "sweeps", "pretrain"}
    stray = [p for p in CONFIGS if p.parent.name not in groups]
    assert not stray, f"configs outside the parsed groups (add a parse test): {stray}"
    assert len(MAIN_CONFIGS) >= 2 and len(OVERLAYS) >= 9


@pytest.mark.slow  # a real fit in a subprocess: ~11-16 s each
@pytest.mark.parametrize("bar", ["false", "true"])  # true: the default of the shipped configs
def test_fit_into_a_log_file_prints_steady_progress_lines(tmp_path: Path, bar: str) -> None:
    """stderr redirected to a file (SLURM, nohup): step/total, loss and ETA lines, not one line at the end."""
    import os
    import subprocess
    import sys

    log = tmp_path / "fit.log"
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-c", "from recapture.cli import main; main()", *_fast_args(tmp_path),
             "--trainer.enable_progress_bar", bar, "--trainer.logger", "false"],
            stdout=f, stderr=subprocess.STDOUT, timeout=600, cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"},
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "step 1/4 (25%) temporal loss" in text and "step 4/4 (100%)" in text
    assert "s/step, elapsed" in text and "eta" in text


@pytest.mark.slow  # a real fit in a subprocess: ~10-18 s
def test_console_fit_has_no_lightning_tips_or_eval_mode_warning(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from recapture.cli import main; main()", *_fast_args(tmp_path),
         "--trainer.max_steps", "2", "--trainer.logger", "false"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "litlogger" not in out and "in eval mode at the start of training" not in out
    assert "step 2/2 (100%)" in out  # the run itself still reports


@pytest.mark.parametrize("steps_per_epoch", [
    50,  # stopped mid-epoch
    pytest.param(3, marks=pytest.mark.slow),  # stopped at an epoch's end
    pytest.param(2, marks=pytest.mark.slow),  # stopped mid-epoch after an epoch boundary, another one ahead
])
def test_resuming_gives_the_lora_an_uninterrupted_run_gives(tmp_path: Path, steps_per_epoch: int) -> None:
    """Stopped at step 3 and resumed to 6: bit for bit the LoRA weights of 6 steps in one go.

    The batch of each step (a resumable loader: the epoch continues where it stopped) and the noise
    (the RNG state saved in the checkpoint, restored before the first resumed step) are those of the
    uninterrupted run, and Lightning does not warn that the loader is not resumable.
    """
    import warnings

    from safetensors.torch import load_file

    every = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
             "--trainer.callbacks.every_n_train_steps", "3", "--model.sampling.num_inference_steps", "1",
             "--model.refine.num_inference_steps", "1", "--data.steps_per_epoch", str(steps_per_epoch)]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    cli_main([*_fast_args(tmp_path, "fit", *every, "--trainer.max_steps", "6"), "--trainer.default_root_dir", str(straight)])
    cli_main([*_fast_args(tmp_path, "fit", *every, "--trainer.max_steps", "3"), "--trainer.default_root_dir", str(stopped)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = cli_main([*_fast_args(tmp_path, "fit", *every, "--trainer.max_steps", "6"),
                        "--trainer.default_root_dir", str(stopped),
                        "--ckpt_path", str(stopped / "checkpoints" / "last.ckpt")])
    assert cli.trainer.global_step == 6
    assert not [w for w in caught if "not resumable" in str(w.message)]
    for kind in ("spatial", "temporal"):
        a = load_file(straight / "lora" / kind / "pytorch_lora_weights.safetensors")
        b = load_file(stopped / "lora" / kind / "pytorch_lora_weights.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), kind
