"""Every command's output folder is checked before any work, and killed writes are cleaned from it.

An output path that is an existing file, lies under a file, or cannot be written is one line naming
the option and the path (exit 2 in the console), before a video is decoded or a model loaded; the
temporaries (``.<name>.<random>.partial*``) a killed run left in an output folder are removed when the
next run opens it (only those older than 10 minutes: a live writer elsewhere keeps its own).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recapture.utils as utils
from recapture.cli import cli_main
from recapture.utils import RecaptureError, check_output_folder

REPO = Path(__file__).resolve().parents[1]
ANCHOR_FAST = ["--data.num_frames", "3", "--data.size", "64", "--data.depth", "PriorDepthSource"]


@pytest.fixture(autouse=True)
def _chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_an_existing_file_or_a_path_under_one_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    with pytest.raises(RecaptureError, match=r"^--output .*notes\.txt is an existing file, not a folder"):
        check_output_folder(existing, "--output")
    with pytest.raises(RecaptureError, match=r"^--output .*part of the path is an existing file"):
        check_output_folder(existing / "sub", "--output")
    assert existing.read_text() == "mine"


def test_a_folder_that_cannot_be_written_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(folder: Path) -> None:  # root ignores permissions: simulate a read-only file system
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(utils, "_probe_write", read_only)
    with pytest.raises(RecaptureError, match=r"cannot write to the output folder --output .*ro \(read-only file system\)"):
        check_output_folder(tmp_path / "ro", "--output")


def test_the_probe_leaves_nothing(tmp_path: Path) -> None:
    assert check_output_folder(tmp_path / "out", "--output") == tmp_path / "out"
    assert list((tmp_path / "out").iterdir()) == []


def test_stale_temporaries_of_a_killed_run_are_removed_fresh_ones_kept(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "lora" / "spatial").mkdir(parents=True)
    stale = [run / ".anchor.k2j3.partial.mp4", run / "checkpoints" / ".last.a1b2.partial.ckpt",
             run / "lora" / "spatial" / ".pytorch_lora_weights.x9.partial.safetensors"]
    for path in stale:
        path.write_bytes(b"torn")
        _age(path, 3600)
    fresh = run / "checkpoints" / ".last.zz.partial.ckpt"  # another process may still be writing it
    fresh.write_bytes(b"in progress")
    kept = [run / "checkpoints" / "last.ckpt", run / "anchor.mp4"]
    for path in kept:
        path.write_bytes(b"complete")
        _age(path, 3600)
    with caplog.at_level("INFO", logger="recapture"):
        check_output_folder(run, "--output")
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.read_bytes() == b"complete" for p in kept)
    assert "removed 3 unfinished write(s)" in caplog.text


def test_trajectory_output_that_is_a_file_is_one_line_in_the_console(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("mine")
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", "from recapture.cli import main; main()", "trajectory",
                           "--trajectory.preset", "orbit", "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("recapture trajectory: error: --output ")
    assert "is an existing file" in proc.stderr and (tmp_path / "out").read_text() == "mine"


def test_evaluate_checks_its_output_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recapture.commands.evaluate as command
    from recapture.data.example import make_example_clip
    from recapture.io import write_video

    clip, _, _ = make_example_clip(num_frames=3, height=32, width=32)
    video = write_video(tmp_path / "pred.mp4", clip.frames, clip.fps)
    (tmp_path / "eval").write_text("mine")
    monkeypatch.setattr(command, "_load_item", lambda *a, **k: pytest.fail("decoded before the output check"))
    with pytest.raises(RecaptureError, match=r"--output .*eval is an existing file"):
        cli_main(["evaluate", "--pred", str(video), "--target", str(video), "--output", str(tmp_path / "eval"),
                  "--metrics", "psnr"])


@pytest.mark.parametrize("command", ["anchor", "generate"])
def test_anchor_and_generate_check_their_output_before_the_work(tmp_path: Path, monkeypatch, command: str) -> None:
    from recapture.training.datamodule import ReCaptureDataModule

    monkeypatch.setattr(ReCaptureDataModule, "build_anchor", lambda *a, **k: pytest.fail("worked before the check"))
    (tmp_path / "out").write_text("mine")
    with pytest.raises(RecaptureError, match=r"^--output .*out is an existing file"):
        cli_main([command, "--config", str(REPO / "configs" / "demo.yaml"), "--model.components.tiny", "true",
                  *ANCHOR_FAST, "--trainer.logger", "false", "--output", str(tmp_path / "out")])


def test_anchor_logs_no_wandb_notice(tmp_path: Path) -> None:
    """anchor logs nothing to W&B: without credentials it must not print the offline notice (orbit.yaml
    has a WandbLogger)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HF_HUB_OFFLINE="1", HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"))
    proc = subprocess.run([sys.executable, "-c", "from recapture.cli import main; main()", "anchor",
                           "--config", str(REPO / "configs" / "orbit.yaml"), *ANCHOR_FAST,
                           "--output", str(tmp_path / "anchor")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "anchor" / "anchor.mp4").is_file()
    assert "W&B" not in proc.stderr and not (tmp_path / "wandb").exists(), proc.stderr[-3000:]


def test_generated_scene_data_is_git_ignored() -> None:
    """`recapture benchmark` generates kubric-mini scenes under data/: they must never be committed."""
    lines = (REPO / ".gitignore").read_text().splitlines()
    assert "/data/" in lines
