"""Run folders: locked while in use, never reused silently, checkpoints never torn, nothing-to-do refused.

Issue 11, items 2, 3, 6 (checkpoint and output-path errors) and 7: every user error is one line, exit 2.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recapture.cli import cli_main
from recapture.training import run_folder
from recapture.training.run_folder import LOCK_NAME, AtomicCheckpointIO, RunLock, lock_run_folder
from recapture.utils import RecaptureError

REPO = Path(__file__).resolve().parents[2]

# a fast variant of the demo (see tests/training/test_training_cli.py), without a logger
FAST = [
    "--model.components.tiny", "true",  # the tiny random set (configs/demo.yaml ships the prior)
    "--trainer.max_steps", "2",
    "--model.sampling.num_inference_steps", "2",
    "--model.refine.num_inference_steps", "2",
    "--model.refine.strength", "0.5",
    "--data.num_frames", "4",
    "--data.size", "128",
    "--data.augment.pool_size", "2",
    "--data.augment.condition_draws", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.logger", "false",
]
CHECKPOINTS = [
    "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
    "--trainer.callbacks.every_n_train_steps", "1",
]


def _args(tmp_path: Path, *extra: str, root: Path | None = None) -> list[str]:
    return [
        "fit",
        "--config", str(REPO / "configs" / "demo.yaml"),
        *FAST,
        "--trainer.default_root_dir", str(root if root is not None else tmp_path / "run"),
        "--data.anchor.cache_dir", str(tmp_path / "cache" / "anchors"),
        "--data.latent_cache_dir", str(tmp_path / "cache" / "latents"),
        *extra,
    ]


def _console(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``recapture ARGS`` as a user runs it (a fresh process, errors printed, exit status)."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", "from recapture.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("recapture fit: error: "), proc.stderr[-3000:]
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0]  # nothing after it (no usage dump)
    return errors[0]


@pytest.fixture(autouse=True)
def _chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(root: Path, pid: int, **extra: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2024-01-01 00:00:00",
                                **extra}))
    return lock


# ------------------------------------------------------------------------------------------- lock
def test_second_fit_into_a_locked_run_folder_refuses_at_once_with_one_line(tmp_path: Path) -> None:
    """A live run's lock (this test process stands in for it): the console `fit` exits 2 before any work."""
    run = tmp_path / "run"
    lock = _write_lock(run, os.getpid(), process_start=run_folder._process_start(os.getpid()))
    proc = _console(_args(tmp_path), cwd=tmp_path)
    line = _one_error_line(proc)
    assert "in use by another run" in line and f"pid {os.getpid()}" in line and str(lock) in line
    assert lock.is_file()  # the other run's lock is left alone
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written


def test_lock_is_taken_refused_when_held_and_released() -> None:
    root = Path("run")
    lock = lock_run_folder(root)
    owner = json.loads((root / LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    with pytest.raises(RecaptureError, match=r"in use by another run \(pid \d+ on .*delete .*\.recapture\.lock"):
        lock_run_folder(root)
    lock.release()
    assert not (root / LOCK_NAME).exists()
    lock_run_folder(root).release()


def test_stale_lock_of_a_dead_or_reused_pid_is_removed(caplog: pytest.LogCaptureFixture) -> None:
    root = Path("run")
    _write_lock(root, _dead_pid())
    with caplog.at_level("WARNING", logger="recapture"):
        lock = lock_run_folder(root)
    assert "stale lock" in caplog.text
    assert json.loads((root / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    # a live PID whose process started at another time: the PID was reused, the lock is stale too
    _write_lock(root, os.getpid(), process_start="1")
    lock_run_folder(root).release()
    # a lock from another host cannot be checked: it is held
    (root / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(RecaptureError, match="pid 1 on elsewhere.example"):
        lock_run_folder(root)


def test_failed_fit_releases_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recapture.training.cli as training_cli

    seen = []

    def failing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - fails while the run holds the lock
        seen.append((tmp_path / "run" / LOCK_NAME).is_file())
        raise RecaptureError("simulated failure after the lock was taken")

    monkeypatch.setattr(training_cli, "resolve_models", failing)
    with pytest.raises(RecaptureError, match="simulated"):
        cli_main(_args(tmp_path))
    assert seen == [True]
    assert not (tmp_path / "run").exists()  # released, and the empty folder this run created is gone
    assert not RunLock.held
    # a run folder under new parents (runs/orbit, the configs' layout): none of them is left behind,
    # and a parent that was there before stays
    (tmp_path / "kept").mkdir()
    with pytest.raises(RecaptureError, match="simulated"):
        cli_main(_args(tmp_path, root=tmp_path / "kept" / "runs" / "a" / "orbit"))
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())
    assert not RunLock.held


# ------------------------------------------------------------------------------------------- reruns
def test_rerun_needs_overwrite_and_last_ckpt_is_always_the_latest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    cli_main(_args(tmp_path, *CHECKPOINTS))
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}

    # a plain rerun into the finished folder is refused, and changes nothing
    with pytest.raises(RecaptureError, match=r"already holds a run .*--ckpt_path .*last\.ckpt.*--overwrite"):
        cli_main(_args(tmp_path, *CHECKPOINTS))
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before

    # --overwrite starts over: the old run's checkpoints are gone, last.ckpt is the new run's
    cli_main(_args(tmp_path, *CHECKPOINTS, "--overwrite", "--trainer.max_steps", "3"))
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 3
    assert "overwrite: false" in (run / "config.yaml").read_text()  # rerunning the saved config deletes nothing
    assert json.loads((run / "report.json").read_text())["global_step"] == 3

    # resuming into the folder needs no --overwrite; last.ckpt is replaced, never last-v1.ckpt
    cli_main(_args(tmp_path, *CHECKPOINTS, "--trainer.max_steps", "4", "--ckpt_path", str(ckpts / "last.ckpt")))
    assert not list(ckpts.glob("last-v*.ckpt"))
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 4
    assert not list(run.rglob("*.partial*")) and not (run / LOCK_NAME).exists()


def test_previous_run_and_clear_touch_only_run_outputs(tmp_path: Path) -> None:
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    (root / "lora" / "spatial").mkdir(parents=True)
    for name in ("config.yaml", "report.json", "anchor.mp4", "notes.txt", "checkpoints/last.ckpt",
                 "checkpoints/last-v1.ckpt", "lora/spatial/w.safetensors"):
        (root / name).write_text("x")
    found = run_folder.previous_run(root)
    assert {"config.yaml", "report.json", "lora", "checkpoints/last.ckpt", "checkpoints/last-v1.ckpt"} == set(found)
    deleted = run_folder.clear_previous_run(root, keep=root / "checkpoints" / "last-v1.ckpt")
    assert "checkpoints/last.ckpt" in deleted and "lora" in deleted
    assert sorted(p.name for p in root.rglob("*")) == ["checkpoints", "last-v1.ckpt", "notes.txt"]
    assert run_folder.previous_run(tmp_path / "empty") == []


# ------------------------------------------------------------------------------------------- atomic checkpoints
def _tiny_state(step: int) -> dict:
    return {"state_dict": {"w": torch.full((64, 64), float(step))}, "global_step": step}


def test_failed_checkpoint_write_keeps_the_previous_complete_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_tiny_state(1), last)
    good = last.read_bytes()

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # noqa: ANN001, ANN202 - writes half, then the disk is full
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RecaptureError, match=r"could not write the checkpoint .*last\.ckpt \(no space left.*intact"):
        io.save_checkpoint(_tiny_state(2), last)
    monkeypatch.undo()
    assert last.read_bytes() == good
    assert io.load_checkpoint(last)["global_step"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no partial file


def test_fit_installs_the_atomic_checkpoint_io() -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recapture.training.cli import place_checkpoints

    trainer = Trainer(accelerator="cpu", logger=False, default_root_dir="run", callbacks=[ModelCheckpoint()],
                      enable_progress_bar=False, enable_model_summary=False)
    place_checkpoints(trainer, replace_in_run_folder=True)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    cb = trainer.checkpoint_callback
    assert Path(cb.dirpath) == Path("run") / "checkpoints" and cb.save_last
    assert cb._enable_version_counter is False  # last.ckpt is replaced, never last-v1.ckpt


# ------------------------------------------------------------------------------------------- --ckpt_path
def _bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.ckpt"
    torch.save(_tiny_state(1), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.ckpt"
    mid = bytearray(data)
    mid[len(mid) // 2] ^= 0xFF  # inside the tensor data
    flipped.write_bytes(bytes(mid))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all\n" * 10)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.ones(2)}, other)
    return {
        "missing": (tmp_path / "missing.ckpt", "does not exist"),
        "folder": (tmp_path, "is a folder"),
        "empty": (empty, "is empty"),
        "truncated": (truncated, "truncated or corrupt"),
        "bit-flip": (flipped, "corrupt"),
        "garbage": (garbage, "not a loadable checkpoint"),
        "not-lightning": (other, "not a Lightning checkpoint"),
    }


def test_bad_ckpt_path_is_one_error_before_any_work(tmp_path: Path) -> None:
    for name, (path, message) in _bad_checkpoints(tmp_path).items():
        with pytest.raises(RecaptureError, match=message) as err:
            cli_main(_args(tmp_path, "--ckpt_path", str(path)))
        assert str(path) in str(err.value) and "\n" not in str(err.value), name
        assert not (tmp_path / "run").exists(), name  # nothing rendered, no folder left behind


def test_checkpoint_io_load_errors_are_one_line(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    for name, (path, message) in _bad_checkpoints(tmp_path).items():
        if name == "folder":
            message = "not a file"
        elif name == "missing":
            message = "does not exist"
        with pytest.raises(RecaptureError, match=message):
            io.load_checkpoint(path)


def test_resuming_a_checkpoint_past_max_steps_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "at4.ckpt"
    torch.save(_tiny_state(4), ckpt)
    with pytest.raises(RecaptureError, match=r"already at step 4 .*max_steps is 2.*above 4"):
        cli_main(_args(tmp_path, "--ckpt_path", str(ckpt)))


# ------------------------------------------------------------------------------------------- output paths
def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    with pytest.raises(RecaptureError, match=r"notes\.txt is an existing file, not a folder"):
        cli_main(_args(tmp_path, root=existing))
    with pytest.raises(RecaptureError, match=r"part of the path is an existing file"):
        cli_main(_args(tmp_path, root=existing / "run"))
    assert existing.read_text() == "mine"


def test_output_path_that_is_a_file_exits_2_in_the_console(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("mine")
    line = _one_error_line(_console(_args(tmp_path, root=tmp_path / "out"), cwd=tmp_path))
    assert "is an existing file" in line


def test_read_only_run_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        probe = ro / "probe"
        try:
            probe.write_text("x")  # root ignores permissions: simulate the read-only file system instead
            probe.unlink()

            def read_only(path: Path) -> int:
                raise OSError(30, "Read-only file system", str(path))

            monkeypatch.setattr(run_folder, "_open_exclusive", read_only)
            reason = "read-only file system"
        except PermissionError:
            reason = "permission denied"
        with pytest.raises(RecaptureError, match=rf"cannot write to the run folder .*ro \({reason}\): choose a writable"):
            cli_main(_args(tmp_path, root=ro))
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


# ------------------------------------------------------------------------------------------- nothing to do
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trainer.max_steps", "0"], r"--trainer.max_steps 0 trains nothing.*-1 for no step limit"),
        (["--trainer.max_steps", "-5"], r"--trainer.max_steps -5 is negative"),
        (["--trainer.max_epochs", "0"], r"--trainer.max_epochs 0 trains nothing"),
        (["--data.num_frames", "1"], r"--data.num_frames 1: .*at least 2 frames"),
        (["--model.optimizer.init_args.lr", "-0.001"], r"lr -0.001 is negative"),
    ],
    ids=["max_steps=0", "max_steps=-5", "max_epochs=0", "num_frames=1", "lr<0"],
)
def test_nothing_to_do_or_invalid_values_are_refused_upfront(tmp_path: Path, extra: list[str], message: str) -> None:
    with pytest.raises(RecaptureError, match=message):
        cli_main(_args(tmp_path, *extra))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # no work done


def test_max_steps_minus_one_means_unlimited() -> None:
    from jsonargparse import Namespace

    from recapture.training.cli import check_fit_config

    cfg = Namespace(trainer=Namespace(max_steps=-1, max_epochs=2, default_root_dir="run"),
                    data=Namespace(num_frames=2), model=Namespace(optimizer=None), ckpt_path=None)
    lock = check_fit_config(cfg)
    assert lock is not None and (Path("run") / LOCK_NAME).is_file()
    lock.release()


def test_max_steps_zero_exits_2_in_the_console(tmp_path: Path) -> None:
    line = _one_error_line(_console(_args(tmp_path, "--trainer.max_steps", "0"), cwd=tmp_path))
    assert "--trainer.max_steps 0" in line
    assert not (tmp_path / "run").exists()
