"""`weights_fingerprint`: different weights or configs give a different hash; Hugging Face cache blobs are not read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from recapture.hub import weights_fingerprint
from recapture.utils import RecaptureError


def _folder(root: Path, unet: bytes, config: str = '{"a": 1}') -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(unet)
    (root / "unet" / "config.json").write_text(config)
    (root / "notes.txt").write_text("not part of the model")
    return root


def test_fingerprint_follows_weights_and_configs_only(tmp_path: Path) -> None:
    base = weights_fingerprint(_folder(tmp_path / "a", b"\x00" * 64))
    assert base == weights_fingerprint(_folder(tmp_path / "b", b"\x00" * 64))
    assert base != weights_fingerprint(_folder(tmp_path / "c", b"\x00" * 63 + b"\x01"))
    assert base != weights_fingerprint(_folder(tmp_path / "d", b"\x00" * 64, '{"a": 2}'))
    (tmp_path / "a" / "notes.txt").write_text("edited")
    assert weights_fingerprint(tmp_path / "a") == base
    with pytest.raises(RecaptureError, match="no weights or config"):
        weights_fingerprint(tmp_path / "a" / "nothing-here")


def _hub_snapshot(root: Path, blob_name: str, content: bytes) -> Path:
    """The Hugging Face cache layout: snapshots/<rev>/unet/<file> -> ../../../blobs/<sha256>."""
    blobs, snap = root / "blobs", root / "snapshots" / "rev" / "unet"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (blobs / blob_name).write_bytes(content)
    (snap / "diffusion_pytorch_model.safetensors").symlink_to(blobs / blob_name)
    return root / "snapshots" / "rev"


def test_fingerprint_of_a_hub_snapshot_uses_the_blob_names(tmp_path: Path) -> None:
    name = hashlib.sha256(b"weights").hexdigest()
    real = weights_fingerprint(_hub_snapshot(tmp_path / "real", name, b"weights"))
    # the same blob name with other bytes: the name is what counts (huge files are not read)
    assert weights_fingerprint(_hub_snapshot(tmp_path / "same-name", name, b"other")) == real
    other = hashlib.sha256(b"new weights").hexdigest()
    assert weights_fingerprint(_hub_snapshot(tmp_path / "new", other, b"new weights")) != real
