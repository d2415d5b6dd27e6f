"""Outputs are written atomically: the same file modes whichever library wrote them (LoRA files were
0600), and a full disk is one clear error that leaves nothing under the final name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recapture.utils import atomic_path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_private_temporary_becomes_a_normal_output(tmp_path: Path, umask_022) -> None:  # noqa: ANN001
    with atomic_path(tmp_path / "out.bin") as tmp:
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)  # what tempfile / some writers do
        os.write(fd, b"x")
        os.close(fd)
    assert oct((tmp_path / "out.bin").stat().st_mode & 0o777) == "0o644"
    with atomic_path(tmp_path / "folder") as tmp:
        tmp.mkdir(mode=0o700)
        (tmp / "inner").write_bytes(b"y")
        (tmp / "inner").chmod(0o600)
    assert oct((tmp_path / "folder").stat().st_mode & 0o777) == "0o755"
    assert oct((tmp_path / "folder" / "inner").stat().st_mode & 0o777) == "0o644"


def test_lora_files_are_0644(tmp_path: Path, umask_022) -> None:  # noqa: ANN001
    from recapture.adaptation import LoRAConfig, add_recapture_adapters, build_tiny_components, save_lora

    parts = build_tiny_components(0)
    add_recapture_adapters(parts.unet, LoRAConfig(rank=2))
    path = save_lora(parts.unet, "spatial", tmp_path / "lora" / "spatial")
    files = [path] if path.is_file() else list(path.rglob("*.safetensors"))
    assert files and all(oct(f.stat().st_mode & 0o777) == "0o644" for f in files)


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """ENOSPC, or torch.save's RuntimeError on a disk with no space left, names the file and the cause."""
    import errno
    import shutil
    from collections import namedtuple

    from recapture.utils import RecaptureError

    target = tmp_path / "out" / "entry.pt"
    with pytest.raises(RecaptureError, match=r"could not write .*entry.pt: no space left on the device"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(target.parent.iterdir()) == []

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2 << 20, 2 << 20, 0))
    with pytest.raises(RecaptureError, match="no space left"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2048 vs 1942")
    assert list(target.parent.iterdir()) == []

    import tempfile

    def full(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:  # so full that not even the empty temporary can be created
        m.setattr(tempfile, "mkstemp", full)
        with pytest.raises(RecaptureError, match=r"could not write .*entry.pt: no space left on the device"):
            with atomic_path(target):
                pytest.fail("the block must not run")

    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(1 << 40, 0, 1 << 40))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with space left it is not a full disk
        with atomic_path(target) as tmp:
            raise RuntimeError("unexpected pos")
