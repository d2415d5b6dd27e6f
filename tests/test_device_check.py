"""``benchmarks/device/check.sh``, the GPU check for a lent machine: what can be run without a GPU.

Its stages need CUDA; here the script's own logic is checked: modes, the missing kit, and that the
kit's packages are extracted once and come first on the path (a fake ``av`` in a fake kit shadows
the installed one in the import check's versions).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device" / "check.sh"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a bash script for the lent Linux machines")


def _run(tmp_path: Path, *args: str, kit: Path | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # python3: this one
        "OUT": str(tmp_path / "out"),
        "RECAPTURE_KIT": str(kit or tmp_path / "no-kit.tar.xz"),
        "RECAPTURE_SITE": str(tmp_path / "site"),
    }
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)


def test_an_unknown_mode_and_a_missing_kit_are_refused_with_the_fix(tmp_path: Path) -> None:
    out = _run(tmp_path, "fast")
    assert out.returncode == 2 and "unknown mode 'fast'" in out.stderr and "steps" in out.stderr
    out = _run(tmp_path, "env")
    assert out.returncode == 3 and "no-kit.tar.xz is missing" in out.stderr and "make_kit.sh" in out.stderr
    assert not (tmp_path / "site").exists()


def test_the_kit_is_extracted_once_and_shadows_installed_packages(tmp_path: Path) -> None:
    kit = tmp_path / "kit.tar.xz"
    with tarfile.open(kit, "w:xz") as tar:
        body = b'__version__ = "from-the-kit"\n'
        info = tarfile.TarInfo("av/__init__.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    out = _run(tmp_path, "env", kit=kit)
    assert out.returncode == 0, out.stderr
    versions = (tmp_path / "out" / "versions.txt").read_text()
    assert f"av from-the-kit {tmp_path / 'site' / 'av' / '__init__.py'}" in versions
    assert "recapture imports" in versions
    assert (tmp_path / "site" / ".complete").exists()
    kit.unlink()  # extracted once: a second call does not need the archive
    assert _run(tmp_path, "env", kit=kit).returncode == 0
