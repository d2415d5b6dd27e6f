"""sha256 checksums of a folder's files (``checksums.json``), written by exports and checked on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from recapture.utils import write_json

CHECKSUMS = "checksums.json"

__all__ = ["CHECKSUMS", "sha256_file", "verify_checksums", "write_checksums"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(folder: Path) -> Path:
    """Write ``checksums.json``: ``{"algorithm": "sha256", "files": {relative path: hex}}`` of every other file."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    table = {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}
    return write_json(folder / CHECKSUMS, {"algorithm": "sha256", "files": table})


def verify_checksums(folder: str | Path, only: tuple[str, ...] = ()) -> list[str]:
    """Files of ``folder`` that are missing, extra or differ from its ``checksums.json`` (empty: all match).

    Args:
        folder: a folder holding ``checksums.json``.
        only: check only the listed files whose path starts with one of these prefixes (e.g.
            ``("unet/", "vae/")``); extra files outside them are ignored.
    """
    folder = Path(folder)
    table = json.loads((folder / CHECKSUMS).read_text())["files"]
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
               if p.is_file() and p.name != CHECKSUMS and "__pycache__" not in p.parts}
    if only:
        table = {k: v for k, v in table.items() if k.startswith(only)}
        present = {k for k in present if k.startswith(only)}
    bad = sorted(set(table) ^ present)
    bad += sorted(name for name in set(table) & present if sha256_file(folder / name) != table[name])
    return bad
