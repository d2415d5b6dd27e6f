"""``recapture cache``: show or clear the on-disk caches (anchors, training latents).

Plain ``argparse`` and the standard library at import time (no torch, Lightning or diffusers), so
``recapture cache info`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recapture import caching
from recapture.utils import PARTIAL_MAX_AGE_S, RecaptureError, clean_partials

__all__ = ["cache_info", "clear_cache", "run_cache"]

DESCRIPTION = "Show (info) or clear the anchor and latent caches."


def _folders(anchors_dir: str | None, latents_dir: str | None) -> dict[str, Path]:
    given = {"anchors": anchors_dir, "latents": latents_dir}
    return {name: Path(given[name] or kind.default_dir) for name, kind in caching.CACHES.items()}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.partial*")) if folder.is_dir() else []


def cache_info(anchors_dir: str | None = None, latents_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """Entries, total size and cap of each cache: ``{name: {"path", "entries", "bytes", "cap_bytes", ...}}``."""
    cap = caching.max_cache_bytes()
    info = {}
    for name, folder in _folders(anchors_dir, latents_dir).items():
        files = caching.entries(folder, caching.CACHES[name].suffix)
        sizes = []
        for p in files:
            try:
                sizes.append((p.stat().st_size, p.stat().st_mtime))
            except OSError:
                continue
        info[name] = {
            "path": str(folder),
            "exists": folder.is_dir(),
            "entries": len(sizes),
            "bytes": sum(s for s, _ in sizes),
            "cap_bytes": cap,
            "partials": len(_partials(folder)),
            "last_used": max((t for _, t in sizes), default=None),
        }
    return info


def clear_cache(
    which: Sequence[str] = ("anchors", "latents"), anchors_dir: str | None = None, latents_dir: str | None = None
) -> dict[str, tuple[int, int]]:
    """Remove every entry of the chosen caches (and stale temporaries of killed writes).

    A temporary younger than ``PARTIAL_MAX_AGE_S`` is another process's write in progress and stays.

    Returns:
        ``{name: (entries removed, bytes freed)}``.
    """
    folders = _folders(anchors_dir, latents_dir)
    done = {}
    for name in which:
        folder = folders[name]
        count = freed = 0
        for p in caching.entries(folder, caching.CACHES[name].suffix):
            try:
                size = p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                raise RecaptureError(f"cannot remove {p} ({err.strerror}); check the folder's permissions") from err
            count += 1
            freed += size
        clean_partials(folder, older_than_s=PARTIAL_MAX_AGE_S)
        done[name] = (count, freed)
    return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recapture cache",
        description=(
            f"{DESCRIPTION} Entries are checksummed (a bad one is removed and recomputed when read); each "
            f"cache is kept under ${caching.MAX_GB_ENV} GB (default {caching.DEFAULT_MAX_GB:g}) by removing "
            "the least recently used entries."
        ),
    )
    sub = parser.add_subparsers(dest="action", metavar="{info,clear}")
    folders = argparse.ArgumentParser(add_help=False)
    folders.add_argument("--anchors_dir", "--anchors-dir", default=None, metavar="DIR",
                         help=f"anchor cache folder (default {caching.CACHES['anchors'].default_dir}, "
                              "as --data.anchor.cache_dir)")
    folders.add_argument("--latents_dir", "--latents-dir", default=None, metavar="DIR",
                         help=f"latent cache folder (default {caching.CACHES['latents'].default_dir}, "
                              "as --data.latent_cache_dir)")
    sub.add_parser("info", parents=[folders], help="entries and sizes per cache",
                   description="Print the entries, size and cap of each cache.")
    clear = sub.add_parser("clear", parents=[folders], help="remove cached entries (both caches by default)",
                           description="Remove the entries of both caches, or only of --anchors / --latents.")
    clear.add_argument("--anchors", action="store_true", help="clear the anchor cache only")
    clear.add_argument("--latents", action="store_true", help="clear the latent cache only")
    return parser


def run_cache(args: Sequence[str], in_process: bool = False) -> Any:
    """Entry point of ``recapture cache`` (the arguments after ``cache``).

    Returns:
        what :func:`cache_info` or :func:`clear_cache` returned (printed as a table).
    """
    parser = _parser()
    ns = parser.parse_args(list(args))
    try:
        if ns.action == "clear":
            which = [n for n in ("anchors", "latents") if getattr(ns, n)] or ["anchors", "latents"]
            done = clear_cache(which, ns.anchors_dir, ns.latents_dir)
            folders = _folders(ns.anchors_dir, ns.latents_dir)
            for name, (count, freed) in done.items():
                print(f"{name:<8} {folders[name]}: removed {count} entr{'y' if count == 1 else 'ies'}, "
                      f"freed {_size(freed)}")
            return done
        if ns.action in (None, "info"):
            info = cache_info(getattr(ns, "anchors_dir", None), getattr(ns, "latents_dir", None))
            _print_info(info)
            return info
    except RecaptureError as err:
        if in_process:
            raise
        print(f"recapture cache: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    parser.error(f"unknown action {ns.action!r}")  # pragma: no cover - argparse rejects it first


def _print_info(info: dict[str, dict[str, Any]]) -> None:
    for name, row in info.items():
        cap = "no cap" if row["cap_bytes"] is None else f"cap {_size(row['cap_bytes'])}"
        if not row["exists"]:
            print(f"{name:<8} {row['path']}: absent (0 entries, {cap})")
            continue
        used = ""
        if row["last_used"] is not None:
            used = f", last used {time.strftime('%Y-%m-%d %H:%M', time.localtime(row['last_used']))}"
        partial = f", {row['partials']} unfinished write(s)" if row["partials"] else ""
        print(f"{name:<8} {row['path']}: {row['entries']} entr{'y' if row['entries'] == 1 else 'ies'}, "
              f"{_size(row['bytes'])} ({cap}{used}{partial})")
    print(f"(entries are checksummed; the cap applies to each cache: ${caching.MAX_GB_ENV}, default "
          f"{caching.DEFAULT_MAX_GB:g} GB; `recapture cache clear [--anchors|--latents]` empties them)")
