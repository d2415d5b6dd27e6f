"""The preview PNG and the `recapture trajectory` command, run in-process."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.cameras import (
    TrajectorySpec,
    compose,
    load_trajectory,
    make_trajectory,
    plot_trajectory,
    save_trajectory,
)
from recapture.cli import cli_main
from recapture.utils import RecaptureError


def test_plot_trajectory_writes_a_png(tmp_path) -> None:
    image = torch.rand(3, 48, 64)
    traj = compose(make_trajectory("orbit", 30.0, 8), make_trajectory("zoom", 0.5, 8))
    path = plot_trajectory(traj, tmp_path / "p.png", image=image, dpi=50)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 150
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 10  # something was drawn
    with pytest.raises(RecaptureError, match="image must be"):
        plot_trajectory(traj, tmp_path / "q.png", image=torch.rand(5, 8, 8))
    assert not (tmp_path / "q.png").exists()


def test_command_writes_json_and_png_that_load_back(tmp_path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    result = cli_main(["trajectory", "--output", str(out), "--preset", "arc", "--amount", "12",
                       "--num_frames", "6", "--height", "48", "--width", "64", "--save_format", "nerfstudio"])
    assert result["trajectory"] == out / "trajectory.json" and result["preview"] == out / "trajectory.png"
    assert (out / "trajectory.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "trajectory.json" in printed and "trajectory.png" in printed
    loaded = load_trajectory(out / "trajectory.json")
    ref = make_trajectory("arc", 12.0, 6)
    torch.testing.assert_close(loaded.c2w, ref.c2w)
    assert loaded.name == ref.name
    assert json.loads((out / "trajectory.json").read_text())["format"] == "recapture.trajectory/v1"
    torch.testing.assert_close(load_trajectory(result["export"]).c2w, ref.c2w, atol=1e-6, rtol=0)
    assert result["summary"]["final_position"][1] < 0  # arc + moves up


def test_command_loads_a_file_and_a_video_folder(tmp_path) -> None:
    src = save_trajectory(make_trajectory("pan", -15.0, 10), tmp_path / "in.json")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 56, 3), 60 * i + 30, dtype=np.uint8)).save(frames / f"{i}.png")
    result = cli_main(["trajectory", "--output", str(tmp_path / "o"), "--file", str(src), "--num_frames", "10",
                       "--video", str(frames)])
    torch.testing.assert_close(load_trajectory(result["trajectory"]).c2w, make_trajectory("pan", -15.0, 10).c2w)
    assert result["export"] is None
    with pytest.raises(RecaptureError, match="save_format"):
        cli_main(["trajectory", "--output", str(tmp_path / "x"), "--save_format", "obj"])


def _bad_trajectory_files(folder) -> dict[str, tuple[object, str]]:
    """Broken trajectory files a new user might pass, with what the error must say about each."""
    eye = torch.eye(4).tolist()
    base = {"format": "recapture.trajectory/v1", "c2w": [eye, eye]}
    cases = {
        "binary": (b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)), "is not UTF-8 text (byte 0x89 at offset 0)"),
        "ragged_intrinsics": ({**base, "intrinsics": [[500, 0, 32], [0, 500]]},
                              "'intrinsics' must be a 3 x 3 or T x 3 x 3 list of numbers, got a ragged list"),
        "string_intrinsics": ({**base, "intrinsics": [["f", 0, 32], [0, "f", 24], [0, 0, 1]]},
                              "'intrinsics' must be a 3 x 3 or T x 3 x 3 list of numbers, got [['f', 0, 32]"),
        "string_focal_scale": ({**base, "focal_scale": "1.5"}, "'focal_scale' must be a list of 2 numbers"),
        "short_pivot": ({**base, "pivot": [0.0, 1.0]}, "'pivot' must be 3 numbers [x, y, z]"),
    }
    out = {}
    for name, (content, needle) in cases.items():
        path = folder / f"{name}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content))
        out[name] = (path, needle)
    return out


@pytest.mark.parametrize("case", ["binary", "ragged_intrinsics", "string_intrinsics", "string_focal_scale",
                                  "short_pivot"])
def test_command_raises_one_line_errors_for_broken_files(tmp_path, case: str) -> None:
    path, needle = _bad_trajectory_files(tmp_path)[case]
    with pytest.raises(RecaptureError) as err:
        cli_main(["trajectory", "--file", str(path), "--output", str(tmp_path / "out")])
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()
    with pytest.raises(RecaptureError, match=re.escape(needle)):  # the same from Python
        TrajectorySpec(file=str(path)).build(2)


@pytest.mark.parametrize("case", ["binary", "short_pivot"])
def test_console_prints_one_line_and_exits_2_for_broken_files(tmp_path, case: str) -> None:
    path, needle = _bad_trajectory_files(tmp_path)[case]
    proc = subprocess.run(
        [sys.executable, "-c", "from recapture.cli import main; main()", "trajectory", "--file", str(path),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recapture trajectory: error: "), proc.stderr
    assert str(path) in lines[0] and needle in lines[0] and "Traceback" not in proc.stderr
