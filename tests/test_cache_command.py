"""``recapture cache info`` / ``recapture cache clear [--anchors|--latents]`` (issue 11, item 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recapture import cli
from recapture.commands.cache import cache_info, clear_cache

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, size: int, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


@pytest.fixture
def caches(tmp_path: Path) -> dict[str, Path]:
    anchors, latents = tmp_path / "c" / "anchors", tmp_path / "c" / "latents"
    _write(anchors / "a1.pt", 1500)
    _write(anchors / "a2.pt", 2500)
    _write(anchors / ".a3.zz11yy.partial.pt", 700, age_s=3600)  # left by a killed write
    _write(anchors / "README.txt", 99)  # not an entry
    _write(latents / "l1.safetensors", 4000)
    _write(latents / ".l2.qq22ww.partial.safetensors", 50, age_s=1)  # a write in progress
    return {"anchors": anchors, "latents": latents}


def _args(caches: dict[str, Path]) -> list[str]:
    return ["--anchors_dir", str(caches["anchors"]), "--latents_dir", str(caches["latents"])]


def test_info_counts_entries_and_sizes(caches, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RECAPTURE_CACHE_MAX_GB", "2")
    info = cli.cli_main(["cache", "info", *_args(caches)])
    assert info["anchors"]["entries"] == 2 and info["anchors"]["bytes"] == 4000
    assert info["anchors"]["partials"] == 1
    assert info["latents"]["entries"] == 1 and info["latents"]["bytes"] == 4000
    assert info["anchors"]["cap_bytes"] == 2_000_000_000
    out = capsys.readouterr().out
    assert f"anchors  {caches['anchors']}: 2 entries, 4.0 KB (cap 2.0 GB" in out
    assert f"latents  {caches['latents']}: 1 entry, 4.0 KB" in out
    assert "checksummed" in out and "recapture cache clear" in out


def test_info_of_absent_caches(tmp_path: Path, capsys) -> None:
    info = cache_info(str(tmp_path / "no" / "anchors"), str(tmp_path / "no" / "latents"))
    assert info["anchors"]["entries"] == 0 and not info["anchors"]["exists"]
    cli.cli_main(["cache", "info", "--anchors_dir", str(tmp_path / "x"), "--latents_dir", str(tmp_path / "y")])
    assert "absent" in capsys.readouterr().out


def test_clear_one_cache_then_both(caches, capsys) -> None:
    done = cli.cli_main(["cache", "clear", "--anchors", *_args(caches)])
    assert done == {"anchors": (2, 4000)}
    assert sorted(p.name for p in caches["anchors"].iterdir()) == ["README.txt"]  # partial gone too
    assert (caches["latents"] / "l1.safetensors").is_file()
    assert "removed 2 entries, freed 4.0 KB" in capsys.readouterr().out
    done = cli.cli_main(["cache", "clear", *_args(caches)])
    assert done == {"anchors": (0, 0), "latents": (1, 4000)}
    # another process's write in progress is left alone
    assert [p.name for p in caches["latents"].iterdir()] == [".l2.qq22ww.partial.safetensors"]


def test_clear_latents_only(caches) -> None:
    assert clear_cache(["latents"], str(caches["anchors"]), str(caches["latents"])) == {"latents": (1, 4000)}
    assert (caches["anchors"] / "a1.pt").is_file() and (caches["anchors"] / "a2.pt").is_file()


def test_registered_and_listed(monkeypatch) -> None:
    assert cli.OWN_CLI_COMMANDS["cache"] == "recapture.commands.cache:run_cache"
    monkeypatch.setattr(cli, "_lightning_commands", lambda: dict(cli.LIGHTNING_COMMANDS))
    assert any(line.split()[:1] == ["cache"] for line in cli._overview().splitlines())


def test_cache_command_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys; from recapture.cli import cli_main; "
        f"cli_main(['cache', 'info', '--anchors_dir', {str(tmp_path)!r}, '--latents_dir', {str(tmp_path)!r}]); "
        "heavy = [m for m in ('torch', 'lightning', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "anchors" in res.stdout


def test_bad_cap_value_is_one_line_error(tmp_path: Path) -> None:
    env = dict(os.environ, RECAPTURE_CACHE_MAX_GB="lots")
    res = subprocess.run(
        [sys.executable, "-m", "recapture.cli", "cache", "info", "--anchors_dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "recapture cache: error: RECAPTURE_CACHE_MAX_GB='lots' is not a number of GB (e.g. 5, or 'none' for no cap)"
    ]
