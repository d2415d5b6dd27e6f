"""What the two on-disk caches share: content checksums, a size cap with LRU eviction, cleanup.

The caches (see the README's "Caches" section):

* ``anchors`` - one ``<key>.pt`` per rendered anchor video (:mod:`recapture.anchor.cache`), default
  ``.recapture_cache/anchors`` (``AnchorConfig.cache_dir``, ``--data.anchor.cache_dir``);
* ``latents`` - one ``<key>.safetensors`` of encoded training tensors per fine-tuning input
  (:class:`recapture.adaptation.encoding.TrainingTensors`), default ``.recapture_cache/latents``
  (``--data.latent_cache_dir``).

Every entry carries the sha256 of its content (:func:`content_digest`), checked when it is read: a
bad entry is reported in one warning line, removed and recomputed. After each write the folder is kept
under :func:`max_cache_bytes` (``RECAPTURE_CACHE_MAX_GB``, default 5 GB per cache) by removing the
least recently used entries (a hit marks an entry used). Temporaries left by killed writes are removed
the first time a process opens the folder.

Imports no torch at module level (``recapture cache info`` stays fast).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recapture.utils import PARTIAL_MAX_AGE_S, RecaptureError, clean_partials

log = logging.getLogger(__name__)

MAX_GB_ENV = "RECAPTURE_CACHE_MAX_GB"
DEFAULT_MAX_GB = 5.0

__all__ = [
    "CACHES",
    "DEFAULT_MAX_GB",
    "MAX_GB_ENV",
    "CacheKind",
    "content_digest",
    "discard",
    "enforce_cap",
    "entries",
    "mark_used",
    "max_cache_bytes",
    "open_folder",
]


@dataclass(frozen=True)
class CacheKind:
    """One cache: its name, default folder and entry file suffix."""

    name: str
    default_dir: str
    suffix: str


CACHES: dict[str, CacheKind] = {
    "anchors": CacheKind("anchors", ".recapture_cache/anchors", ".pt"),
    "latents": CacheKind("latents", ".recapture_cache/latents", ".safetensors"),
}

_opened: set[str] = set()


def max_cache_bytes(max_gb: float | str | None = None) -> int | None:
    """The cap of one cache folder in bytes (``None``: no cap).

    ``max_gb`` if given, else ``$RECAPTURE_CACHE_MAX_GB``, else 5 GB; ``0``, a negative value,
    ``none``, ``off`` or ``inf`` mean no cap.

    Raises:
        RecaptureError: the value is not a number (the message names the variable).
    """
    value: Any = max_gb if max_gb is not None else os.environ.get(MAX_GB_ENV, "").strip() or DEFAULT_MAX_GB
    if isinstance(value, str) and value.lower() in ("none", "off", "inf", "unlimited"):
        return None
    try:
        gb = float(value)
    except ValueError:
        raise RecaptureError(f"{MAX_GB_ENV}={value!r} is not a number of GB (e.g. 5, or 'none' for no cap)") from None
    if gb <= 0 or gb == float("inf"):
        return None
    return int(gb * 1e9)


def content_digest(*parts: Any) -> str:
    """Hex sha256 of tensors, arrays, dicts, lists and JSON-able values (by value, order-stable)."""
    from recapture.utils import _update_hash

    h = hashlib.sha256()
    for part in parts:
        _update_hash(h, part)
    return h.hexdigest()


def open_folder(folder: str | os.PathLike, older_than_s: float = PARTIAL_MAX_AGE_S) -> None:
    """First use of ``folder`` in this process: remove stale temporaries of killed writes."""
    key = str(Path(folder).resolve())
    if key in _opened:
        return
    _opened.add(key)
    removed = clean_partials(folder, older_than_s=older_than_s)
    if removed:
        log.info("removed %d unfinished write(s) from %s: %s", len(removed), folder, ", ".join(p.name for p in removed))


def entries(folder: str | os.PathLike, suffix: str) -> list[Path]:
    """The entry files of a cache folder (temporaries and other files excluded), oldest use first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if p.name.startswith(".") or p.suffix != suffix:
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if p.is_file():
            found.append((st.st_mtime, p.name, p))
    return [p for _, _, p in sorted(found)]


def mark_used(path: Path) -> None:
    """Record a cache hit (the modification time is the entry's last use, for LRU eviction)."""
    try:
        os.utime(path)
    except OSError:  # a read-only cache still works, it just evicts by age of writing
        pass


def discard(path: Path, what: str, reason: str, logger: logging.Logger | None = None) -> None:
    """Report a bad entry in one warning line and remove it (it is recomputed by the caller)."""
    reason = " ".join(str(reason).split())  # one line
    try:
        path.unlink(missing_ok=True)
        action = "removed it, recomputing"
    except OSError as err:
        action = f"could not remove it ({err.strerror}), recomputing"
    (logger or log).warning("%s cache entry %s is bad (%s); %s", what, path, reason, action)


def enforce_cap(
    folder: str | os.PathLike, suffix: str, max_bytes: int | None = None, keep: tuple[Path, ...] = ()
) -> list[Path]:
    """Remove the least recently used entries until the folder's entries total at most ``max_bytes``.

    Args:
        folder: the cache folder.
        suffix: entry suffix (``.pt``, ``.safetensors``).
        max_bytes: the cap; default :func:`max_cache_bytes` (``RECAPTURE_CACHE_MAX_GB``).
        keep: entries never removed (the one just written, even if it alone exceeds the cap).

    Returns:
        the removed entries.
    """
    if max_bytes is None:
        try:
            max_bytes = max_cache_bytes()
        except RecaptureError as err:  # a typo in the environment must not fail the run that just finished
            log.warning("%s; using the default %.0f GB", err, DEFAULT_MAX_GB)
            max_bytes = max_cache_bytes(DEFAULT_MAX_GB)
    cap = max_bytes
    if cap is None:
        return []
    files = entries(folder, suffix)
    sizes = {}
    for p in files:
        try:
            sizes[p] = p.stat().st_size
        except OSError:
            continue
    total = sum(sizes.values())
    kept = {Path(k).resolve() for k in keep}
    removed = []
    for p in files:
        if total <= cap:
            break
        if p not in sizes or p.resolve() in kept:
            continue
        try:
            p.unlink()
        except FileNotFoundError:  # another process evicted it
            pass
        except OSError:
            continue
        total -= sizes[p]
        removed.append(p)
    if removed:
        log.info(
            "cache %s over its %.1f GB cap: removed %d least recently used entr%s", folder, cap / 1e9,
            len(removed), "y" if len(removed) == 1 else "ies",
        )
    return removed
