"""The preview PNG and the `recapture trajectory` command, run in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.cameras import compose, load_trajectory, make_trajectory, plot_trajectory, save_trajectory
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
