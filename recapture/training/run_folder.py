"""Run folders: one run at a time, no silent mixing of runs, checkpoints that are never torn.

A ``recapture fit`` run folder (``trainer.default_root_dir``) is

* **locked while in use**: ``.recapture.lock`` holds the owner's PID, host and start time; a second
  run into the folder refuses at once. A lock whose process is gone (same host, PID dead or
  reused) is stale and removed.
* **never reused silently**: a folder that holds a previous run (``config.yaml``, ``report.json``,
  ``lora/``, checkpoints) is refused unless ``--overwrite`` (start over: the previous run's outputs
  are deleted first) or ``--ckpt_path`` (resume) is given.
* **written atomically**: :class:`AtomicCheckpointIO` writes checkpoints to a temporary name in the
  same folder and renames, so a failed write (full disk, kill) leaves the previous complete file.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from recapture.utils import RecaptureError, atomic_path, check_output_folder, os_error_reason

log = logging.getLogger("recapture")

LOCK_NAME = ".recapture.lock"
# what a finished (or interrupted) fit leaves in its run folder; --overwrite deletes these
RUN_OUTPUTS = (
    "config.yaml", "report.json", "lora", "anchor.mp4", "mask.mp4", "preview.mp4", "trajectory.json",
    "generated.mp4", "refined.mp4", "comparison.mp4", "videos.mp4",
)
MARKERS = ("config.yaml", "report.json", "lora")
# values of --ckpt_path that Lightning resolves itself
SPECIAL_CKPT = ("last", "best", "hpc", "registry")
_STALE_UNREADABLE_S = 60.0


# ---------------------------------------------------------------------------------------- checks
def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an fsspec URL (``s3://...``) rather than a local path."""
    return "://" in str(path) and not str(path).startswith("file://")


def check_run_folder(root: str | os.PathLike) -> Path:
    """Create the run folder ``root`` (if needed), check that it is a writable folder and remove the
    temporaries a killed run left in it (:func:`recapture.utils.check_output_folder`).

    Raises:
        RecaptureError: ``root`` is an existing file, lies under a file, or cannot be written.
    """
    return check_output_folder(root, "--trainer.default_root_dir", what="run folder")


def previous_run(root: str | os.PathLike, checkpoint_dirs: Iterable[str | os.PathLike] = ()) -> list[str]:
    """What a previous run left in ``root`` (names relative to it; empty if nothing)."""
    root = Path(root)
    found = [name for name in MARKERS if (root / name).exists()]
    for folder in {root / "checkpoints", *map(Path, checkpoint_dirs)}:
        if folder.is_dir():
            found += [_rel(p, root) for p in sorted(folder.glob("*.ckpt"))]
    return found


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def refuse_reuse(root: Path, found: list[str]) -> None:
    """Raise the one-line error for rerunning into a run folder that holds the run ``found``."""
    shown = ", ".join(found[:4]) + (f", ... ({len(found)} files)" if len(found) > 4 else "")
    last = root / "checkpoints" / "last.ckpt"
    resume = f"resume it with --ckpt_path {last}, " if last.is_file() else ""
    raise RecaptureError(
        f"the run folder {root} already holds a run ({shown}): {resume}start over with --overwrite "
        "(deletes that run's outputs), or choose another --trainer.default_root_dir"
    )


def clear_previous_run(root: str | os.PathLike, checkpoint_dirs: Iterable[str | os.PathLike] = (),
                       keep: str | os.PathLike | None = None) -> list[str]:
    """Delete the outputs of the previous run in ``root`` (for ``--overwrite``); returns what was deleted.

    Deletes :data:`RUN_OUTPUTS` and the ``*.ckpt`` files of the checkpoint folders inside ``root``
    (never anything else, so a ``default_root_dir`` that also holds other files loses only run outputs).
    ``keep`` (the ``--ckpt_path`` to start from) is never deleted.
    """
    root = Path(root).resolve()
    keep_path = Path(keep).resolve() if keep is not None else None
    deleted = []
    targets = [root / name for name in RUN_OUTPUTS]
    for folder in {root / "checkpoints", *(Path(d).resolve() for d in checkpoint_dirs)}:
        if folder.is_dir() and (folder == root or root in folder.parents):
            targets += sorted(folder.glob("*.ckpt"))
    for path in targets:
        if keep_path is not None and path.resolve() == keep_path:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        deleted.append(_rel(path, root))
    return deleted


def check_checkpoint(path: str | os.PathLike, weights_only: bool | None = None) -> dict[str, Any] | None:
    """Check that ``--ckpt_path`` is a complete, loadable checkpoint before any heavy work.

    Special values Lightning resolves itself (``last``, ``best``, ...) and URLs are not checked here
    (:class:`AtomicCheckpointIO` reports them when they are loaded).

    Returns:
        the loaded checkpoint (tensors memory-mapped where possible), or None when not checked.

    Raises:
        RecaptureError: missing, a folder, empty, truncated, corrupt or not a Lightning checkpoint.
    """
    text = str(path)
    if text in SPECIAL_CKPT or text.startswith("registry:") or is_remote(text):
        return None
    path = Path(text)
    if not path.exists():
        raise RecaptureError(
            f"--ckpt_path {path} does not exist: give the path of a checkpoint, e.g. "
            "<run folder>/checkpoints/last.ckpt (or leave --ckpt_path out to start a new run)"
        )
    if not path.is_file():
        raise RecaptureError(f"--ckpt_path {path} is a folder, not a checkpoint file: give e.g. {path / 'last.ckpt'}")
    return _load_checked(path, weights_only=weights_only)


def _load_checked(path: Path, weights_only: bool | None = None, map_location: Any = "cpu",
                  mmap: bool = True) -> dict[str, Any]:
    fix = "resume from an earlier checkpoint of the run, or start over without --ckpt_path"
    size = path.stat().st_size
    if size == 0:
        raise RecaptureError(f"--ckpt_path {path} is empty (0 bytes; an interrupted write?): {fix}")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()  # CRC of every member: catches truncation and bit flips
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise RecaptureError(f"--ckpt_path {path} is truncated or corrupt ({err}): {fix}") from err
        if bad is not None:
            raise RecaptureError(f"--ckpt_path {path} is corrupt (member {bad} fails its checksum): {fix}")
    try:
        kwargs: dict[str, Any] = {"map_location": map_location}
        if weights_only is not None:
            kwargs["weights_only"] = weights_only
        if mmap and zipfile.is_zipfile(path):
            kwargs["mmap"] = True
        state = torch.load(path, **kwargs)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecaptureError(
            f"--ckpt_path {path} ({size} bytes) is not a loadable checkpoint (truncated or corrupt?): "
            f"{detail[:200]}; {fix}"
        ) from err
    if not isinstance(state, dict) or "state_dict" not in state:
        raise RecaptureError(
            f"--ckpt_path {path} is not a Lightning checkpoint (no 'state_dict'): give a file written by "
            "`recapture fit` (<run folder>/checkpoints/*.ckpt)"
        )
    return state


# ---------------------------------------------------------------------------------------- lock
def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a live owner from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 (starttime), counted after the comm field


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _open_exclusive(path: Path) -> int:
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)


class RunLock:
    """The lock of one run folder, held by this process (see the module docstring)."""

    held: dict[Path, RunLock] = {}

    def __init__(self, root: str | os.PathLike, created: Sequence[Path] = ()) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.created = tuple(created)  # folders this run creates (the run folder, then its new parents)
        self.token = f"{os.getpid()}-{time.time_ns()}"

    def acquire(self) -> RunLock:
        """Take the lock, removing a stale one; raise :class:`RecaptureError` when it is held."""
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "process_start": _process_start(os.getpid()),
            "command": " ".join(["recapture", *sys.argv[1:]])[:500],
            "token": self.token,
        }
        for _ in range(3):
            try:
                fd = _open_exclusive(self.path)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and not self._stale(owner):
                    raise RecaptureError(self._held_message(owner)) from None
                log.warning("removing the stale lock %s (%s)", self.path, _describe(owner))
                with _suppress_missing():
                    self.path.unlink()
                continue
            except OSError as err:
                raise RecaptureError(
                    f"cannot write to the run folder --trainer.default_root_dir {self.root} ({os_error_reason(err)}): "
                    "choose a writable folder"
                ) from err
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(info, f)
            except OSError as err:
                with _suppress_missing():
                    self.path.unlink()
                raise RecaptureError(
                    f"cannot write to the run folder {self.root} ({os_error_reason(err)}): choose a writable folder"
                ) from err
            RunLock.held[self.path] = self
            return self
        raise RecaptureError(f"could not take the lock {self.path}: delete it if no run is using {self.root}")

    def _owner(self) -> dict[str, Any] | None:
        """The lock's contents; None if unreadable and recent (a lock being written right now)."""
        try:
            owner = json.loads(self.path.read_text())
            if isinstance(owner, dict) and isinstance(owner.get("pid"), int):
                return owner
        except (OSError, ValueError):
            pass
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return {}  # gone meanwhile: retry
        return {} if age > _STALE_UNREADABLE_S else None

    @staticmethod
    def _stale(owner: dict[str, Any]) -> bool:
        if not owner:  # unreadable and old, or vanished
            return True
        if owner.get("host") != socket.gethostname():
            return False  # cannot tell: the user decides
        pid = owner["pid"]
        if not _pid_alive(pid):
            return True
        recorded, now = owner.get("process_start"), _process_start(pid)
        return recorded is not None and now is not None and recorded != now  # PID reused

    def _held_message(self, owner: dict[str, Any] | None) -> str:
        who = _describe(owner)
        return (
            f"the run folder {self.root} is in use by another run ({who}): wait for it to finish or choose "
            f"another --trainer.default_root_dir (if no run is using it, delete {self.path})"
        )

    def release(self) -> None:
        """Remove the lock (if it is still ours), and the run folder and the parents this run created, if empty."""
        RunLock.held.pop(self.path, None)
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = None
        if isinstance(owner, dict) and owner.get("token") == self.token:
            with _suppress_missing():
                self.path.unlink()
        for folder in self.created:  # deepest first: a failed first run leaves no empty runs/
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "lock file being written or unreadable"
    parts = [f"pid {owner.get('pid')} on {owner.get('host')}"]
    if owner.get("started"):
        parts.append(f"since {owner['started']}")
    return ", ".join(parts)


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, err: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, FileNotFoundError)


def lock_run_folder(root: str | os.PathLike) -> RunLock:
    """Check ``root`` (:func:`check_run_folder`) and lock it for this process."""
    created, folder = [], Path(root).absolute()
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    check_run_folder(root)
    return RunLock(root, created=created).acquire()


def release_all() -> None:
    """Release every run-folder lock this process holds (end of a command, also on failure)."""
    for lock in list(RunLock.held.values()):
        lock.release()


atexit.register(release_all)


def process_rank() -> int:
    """Global rank of this process from the launcher's environment (0 outside distributed runs).

    Read before the trainer sets up distributed training, so that spawned DDP ranks (which rerun the
    command) neither take the lock nor check the folder.
    """
    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)
    return local + node  # only tells zero from non-zero


# ---------------------------------------------------------------------------------------- checkpoint IO
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a torn checkpoint under its final name.

    ``save_checkpoint`` writes to a temporary name in the same folder (``.last.<random>.partial.ckpt``),
    flushes it to disk and renames it over the target; a failed write (``OSError``: full disk, I/O
    error) removes the temporary and leaves the previous complete file. ``load_checkpoint`` turns a
    missing, truncated or corrupt file into a one-line :class:`~recapture.utils.RecaptureError`.
    Remote (fsspec URL) paths use Lightning's own IO.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or is_remote(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        target = Path(str(path).removeprefix("file://"))
        try:
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
        except (OSError, RecaptureError) as err:  # RecaptureError: atomic_path found the disk full
            reason = os_error_reason(err) if isinstance(err, OSError) else "no space left on the device"
            raise RecaptureError(
                f"could not write the checkpoint {target} ({reason}); the previous checkpoint (if any) is "
                "intact: free space or choose another --trainer.default_root_dir, then resume with --ckpt_path"
            ) from err

    def load_checkpoint(self, path: Any, map_location: Callable | Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if is_remote(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        path = Path(str(path).removeprefix("file://"))
        if not path.is_file():
            raise RecaptureError(f"--ckpt_path {path} does not exist or is not a file: give the path of a checkpoint")
        return _load_checked(path, weights_only=weights_only, map_location=map_location, mmap=False)


def install_atomic_checkpoint_io(trainer: Any) -> bool:
    """Make ``trainer`` write checkpoints with :class:`AtomicCheckpointIO` (unless a custom IO is configured).

    Returns whether it was installed.
    """
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
        return True
    inner = getattr(current, "checkpoint_io", None)  # e.g. AsyncCheckpointIO wrapping the default
    if inner is None or type(inner) is TorchCheckpointIO:
        try:
            current.checkpoint_io = AtomicCheckpointIO()
            return True
        except (AttributeError, ValueError):
            return False
    return isinstance(current, AtomicCheckpointIO)
