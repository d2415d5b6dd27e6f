"""Small shared helpers: atomic outputs, hashing, user-facing errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("recapture")


class RecaptureError(ValueError):
    """An error caused by user input (a file, a value, a config). The message says what and how to fix."""


def check_video(
    frames: Any,
    name: str = "frames",
    *,
    channels: int | tuple[int, ...] | None = 3,
    batched: bool | None = False,
    shape: Sequence[int | None] | None = None,
    first_axis: str = "T",
    fix: str | None = None,
) -> tuple[int, ...]:
    """Check that ``frames`` is a video tensor ``(T, 3, H, W)`` (or a variant) and return its shape.

    The one shape check for videos (and image batches) everywhere: every call raises the same
    message, ``"{name} must be (T, 3, H, W), got (4, 96, 128) (3-D, not 4-D)"``, ending in
    ``"; {fix}"`` when a call-site hint is given. Value ranges, dtypes and sizes that must match
    another input stay with the caller. Duck typed (``.ndim`` / ``.shape``), so this module does not
    import torch; anything that is not a ``torch.Tensor`` is refused.

    Args:
        frames: the value to check.
        name: how the message calls it (``"anchor"``, ``"Video.frames"``).
        channels: the allowed channel counts (``3``, ``(1, 3)``), or ``None`` for any (``C``).
        batched: ``False``: ``(T, C, H, W)``; ``True``: ``(B, T, C, H, W)``; ``None``: either.
        shape: the exact expected shape, ``None`` for an axis that may be anything
            (``(num_frames, 3, height, width)``); shown as ``(T, 3, H, W) = (4, 3, 32, 32)``.
        first_axis: the letter of the leading axis (``"B"`` or ``"N"`` for a batch of images).
        fix: call-site advice appended to the message.

    Returns:
        the shape as a tuple of ints.

    Raises:
        RecaptureError: ``frames`` is not a tensor, or has the wrong number of axes, channels or size.
    """
    allowed = (channels,) if isinstance(channels, int) else tuple(channels) if channels is not None else None
    c = "C" if allowed is None else "|".join(str(n) for n in allowed)
    base = f"{first_axis}, {c}, H, W"
    ndims = {False: (4,), True: (5,), None: (4, 5)}[batched]
    spec = {False: f"({base})", True: f"(B, {base})", None: f"(B, {base}) or ({base})"}[batched]
    if shape is not None:
        shape = tuple(shape)
        if len(shape) not in ndims:
            raise ValueError(f"check_video: shape={shape} does not fit batched={batched}")  # a caller's bug
        letters = ("B", first_axis, c, "H", "W")[5 - len(shape):]
        spec += " = (" + ", ".join(k if s is None else str(s) for s, k in zip(shape, letters, strict=True)) + ")"

    def fail(got: str, problem: str) -> RecaptureError:
        return RecaptureError(f"{name} must be {spec}, got {got} ({problem})" + (f"; {fix}" if fix else ""))

    torch = sys.modules.get("torch")
    if torch is None or not isinstance(frames, torch.Tensor):
        raise fail(type(frames).__name__, "not a torch.Tensor")
    size = tuple(int(s) for s in frames.shape)
    if frames.ndim not in ndims:
        raise fail(str(size), f"{frames.ndim}-D, not " + " or ".join(f"{n}-D" for n in ndims))
    if allowed is not None and size[-3] not in allowed:
        want = " or ".join(str(n) for n in allowed)
        raise fail(str(size), f"{size[-3]} channel{'s' if size[-3] != 1 else ''}, not {want}")
    if shape is not None:
        if len(shape) != len(size):
            raise fail(str(size), f"{len(size)}-D, not {len(shape)}-D")
        letters = ("B", first_axis, "C", "H", "W")[5 - len(shape):]
        wrong = [f"{k} is {s}, not {e}" for s, e, k in zip(size, shape, letters, strict=True) if e is not None and s != e]
        if wrong:
            raise fail(str(size), ", ".join(wrong))
    return size


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    Works for files and directories: whatever the block writes at the yielded path replaces
    ``path`` atomically (same filesystem rename). On an exception the temporary is removed, so an
    interrupted write never leaves a file that looks complete.

    Example::

        with atomic_path("out/anchor.mp4") as tmp:
            write_video(tmp, frames, fps)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as err:  # a folder so full that not even an empty file fits
        if out_of_space(err, path.parent):
            raise _disk_full(path) from err
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the block decides whether it is a file or a directory
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp} for {path}")
        _default_modes(tmp)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        # a full disk shows as ENOSPC, or (torch.save's zip writer) as a RuntimeError: say which
        if out_of_space(err, path.parent):
            raise _disk_full(path) from err
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _disk_full(path: Path) -> RecaptureError:
    return RecaptureError(
        f"could not write {path}: no space left on the device: free some space or write to another "
        "folder (nothing was left under that name)"
    )


def out_of_space(err: BaseException, folder: str | os.PathLike, min_free: int = 1 << 20) -> bool:
    """Whether the write error ``err`` in ``folder`` means a full disk (ENOSPC, or under ``min_free`` bytes free)."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < min_free
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_modes(path: Path) -> None:
    """Give a finished output the modes of any new file (0644 / 0755 under umask 022).

    Some writers (safetensors via huggingface_hub, ``tempfile``) create 0600 files; outputs a user
    shares or serves must not differ by which library wrote them.
    """
    mask = _umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if p.is_symlink():
            continue
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


PARTIAL_MAX_AGE_S = 10 * 60


def clean_partials(folder: str | os.PathLike, older_than_s: float = PARTIAL_MAX_AGE_S) -> list[Path]:
    """Remove the temporaries that killed :func:`atomic_path` writes left in ``folder`` (not recursive).

    They are named ``.<stem>.<random>.partial<suffix>`` (files or folders). Only those not modified for
    ``older_than_s`` seconds are removed, so a write in progress in another process keeps its
    temporary. A missing folder or a temporary that cannot be removed is skipped.

    Returns:
        the removed paths.
    """
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for tmp in folder.glob(".*.partial*"):
        try:
            mtime = tmp.lstat().st_mtime
            if tmp.is_dir() and not tmp.is_symlink():
                mtime = max([mtime] + [p.lstat().st_mtime for p in tmp.rglob("*")])
            if now - mtime < older_than_s:
                continue
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        except OSError:  # vanished meanwhile (its writer finished), or not ours to remove
            continue
        removed.append(tmp)
    return removed


def clean_partials_tree(root: str | os.PathLike, depth: int = 2) -> list[Path]:
    """:func:`clean_partials` in ``root`` and its sub-folders down to ``depth`` levels (a run folder's
    ``checkpoints/``, ``lora/spatial/``, ...); hidden folders and temporaries themselves are not entered."""
    root = Path(root)
    removed = clean_partials(root)
    if depth > 0 and root.is_dir():
        with contextlib.suppress(OSError):
            for sub in sorted(root.iterdir()):
                if sub.is_dir() and not sub.is_symlink() and not sub.name.startswith("."):
                    removed += clean_partials_tree(sub, depth - 1)
    return removed


def os_error_reason(err: OSError) -> str:
    """A few words for why an ``OSError`` happened (read-only file system, permission denied, ...)."""
    import errno

    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    return err.strerror or type(err).__name__


def _probe_write(folder: Path) -> None:
    """Create and remove one temporary in ``folder`` (raises the ``OSError`` of a folder we cannot write)."""
    fd, name = tempfile.mkstemp(prefix=".write-probe.", suffix=".partial", dir=folder)
    os.close(fd)
    os.unlink(name)


def check_output_folder(path: str | os.PathLike, flag: str, what: str = "output folder") -> Path:
    """Create the output folder ``path`` (if needed), check this process can write there, and remove
    the stale temporaries killed writes left in it (:func:`clean_partials_tree`). Call it before any
    heavy work, so a bad output path costs nothing.

    Args:
        path: the folder.
        flag: the option that set it, for the message (``--output``).
        what: what the folder is, for the message.

    Raises:
        RecaptureError: ``path`` is an existing file, lies under a file, or cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RecaptureError(
            f"{flag} {path} is an existing file, not a folder: choose a folder path (e.g. {path}.out) "
            "or move the file away"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise RecaptureError(
            f"{flag} {path}: a part of the path is an existing file ({err.filename}): choose another folder"
        ) from err
    except OSError as err:
        raise RecaptureError(
            f"cannot create the {what} {flag} {path} ({os_error_reason(err)}): choose a writable folder"
        ) from err
    try:
        _probe_write(path)
    except OSError as err:
        raise RecaptureError(
            f"cannot write to the {what} {flag} {path} ({os_error_reason(err)}): choose a writable folder"
        ) from err
    removed = clean_partials_tree(path)
    if removed:
        log.info(
            "removed %d unfinished write(s) of a killed run from %s: %s", len(removed), path,
            ", ".join(str(p.relative_to(path)) for p in removed),
        )
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as pretty JSON atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np
        import torch

        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu().tolist()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def hash_inputs(*parts: Any) -> str:
    """Stable short hash of settings and input files (files hashed by content).

    ``Path`` objects that exist are hashed by their bytes; tensors by their values; everything
    else by its JSON form.
    """
    h = hashlib.sha256()
    for part in parts:
        _update_hash(h, part)
    return h.hexdigest()[:16]


def _update_hash(h: Any, part: Any) -> None:
    import numpy as np
    import torch

    if isinstance(part, Path) and part.is_file():
        h.update(b"file:")
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    elif isinstance(part, Path) and part.is_dir():
        h.update(b"dir:")
        for child in sorted(part.iterdir()):
            h.update(child.name.encode())
            _update_hash(h, child)
    elif isinstance(part, torch.Tensor):
        t = part.detach().cpu().contiguous()
        h.update(f"tensor:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    elif isinstance(part, np.ndarray):
        h.update(f"array:{part.shape}:{part.dtype}".encode())
        h.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, (list, tuple)):
        h.update(b"seq:")
        for p in part:
            _update_hash(h, p)
    elif isinstance(part, dict):
        h.update(b"dict:")
        for k in sorted(part, key=str):
            h.update(str(k).encode())
            _update_hash(h, part[k])
    else:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())


class OneLineParserErrors:
    """Mixin for a jsonargparse ``ArgumentParser``: an error is one line first, the usage only on ``--help``.

    jsonargparse prints the whole usage (~160 lines for ``recapture fit``) before the error, so the
    line that matters scrolls away. With this mixin a command-line or config error prints
    ``recapture fit: error: <message>`` and a pointer to ``--help``, and exits with status 2. Option
    prefixes (``--data.num_frame`` for ``--data.num_frames``) are refused, not silently expanded
    (``allow_abbrev=False``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> Any:
        import sys

        from jsonargparse._common import debug_mode_active

        if not getattr(self, "exit_on_error", True) or debug_mode_active():
            return super().error(message, ex)  # type: ignore[misc]  # raises for in-code callers
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = str(parser.prog).replace(" [options]", "")
        lines = str(message).strip().splitlines() or ["invalid arguments"]
        sys.stderr.write(f"{prog}: error: {lines[0]}\n")
        for line in lines[1:]:
            sys.stderr.write(f"  {line}\n")
        for line in _did_you_mean(lines[0], parser):
            sys.stderr.write(f"  {line}\n")
        sys.stderr.write(f"(`{prog} --help` lists every option)\n")
        parser.exit(2)


def _did_you_mean(message: str, parser: Any) -> list[str]:
    """``did you mean --trainer.max_steps?`` for each unknown option of ``message`` close to a real one."""
    import difflib
    import re

    if message.startswith("unrecognized arguments:"):
        unknown, dash = re.findall(r"(?<!\S)--([\w.\-]+)", message), "--"
    else:  # a config file's key: "... does not accept option 'trainer.max_stepz'"
        unknown, dash = re.findall(r"does not accept option '([\w.\-]+)'", message), ""
    known = sorted({o[2:] for a in getattr(parser, "_actions", []) for o in a.option_strings if o.startswith("--")})
    hints = []
    for key in unknown:
        match = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if match:
            hints.append(f"did you mean {dash}{match[0]}?  (for {dash}{key})")
    return hints
