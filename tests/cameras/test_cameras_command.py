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
    result = cli_main(["trajectory", "--output", str(out), "--trajectory.preset", "arc", "--trajectory.amount", "12",
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
    result = cli_main(["trajectory", "--output", str(tmp_path / "o"), "--trajectory.file", str(src), "--num_frames", "10",
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
        cli_main(["trajectory", "--trajectory.file", str(path), "--output", str(tmp_path / "out")])
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()
    with pytest.raises(RecaptureError, match=re.escape(needle)):  # the same from Python
        TrajectorySpec(file=str(path)).build(2)


@pytest.mark.parametrize("case", ["binary", "short_pivot"])
def test_console_prints_one_line_and_exits_2_for_broken_files(tmp_path, case: str) -> None:
    path, needle = _bad_trajectory_files(tmp_path)[case]
    proc = subprocess.run(
        [sys.executable, "-c", "from recapture.cli import main; main()", "trajectory", "--trajectory.file", str(path),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recapture trajectory: error: "), proc.stderr
    assert str(path) in lines[0] and needle in lines[0] and "Traceback" not in proc.stderr


def test_command_takes_the_fit_trajectory_options_nested(tmp_path, capsys: pytest.CaptureFixture) -> None:
    """`--trajectory.*` are TrajectorySpec's fields (as `--data.trajectory.*` in fit), moves included."""
    from dataclasses import fields

    from recapture.cameras.formats import FORMATS

    with pytest.raises(SystemExit) as exc:
        cli_main(["trajectory", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for field in fields(TrajectorySpec):
        assert f"--trajectory.{field.name} " in help_text, field.name
    assert "--trajectory.mode {gradual,direct}" in help_text and "--preset " not in help_text
    flat = " ".join(help_text.split())
    assert "pan, tilt, roll, truck, pedestal, dolly, zoom, orbit, arc or dolly_zoom" in flat
    assert all(name in flat for name in FORMATS)  # --trajectory.file_format lists the formats
    moves = "[{preset: orbit, amount: 20}, {preset: dolly, amount: 0.1}]"
    result = cli_main(["trajectory", "--trajectory.moves", moves, "--num_frames", "5", "--output",
                       str(tmp_path / "m"), "--height", "32", "--width", "48"])
    ref = TrajectorySpec(moves=[{"preset": "orbit", "amount": 20}, {"preset": "dolly", "amount": 0.1}]).build(5)
    torch.testing.assert_close(load_trajectory(result["trajectory"]).c2w, ref.c2w)
    from recapture.commands.trajectory import trajectory

    direct = trajectory(TrajectorySpec(preset="pan", amount=5.0), num_frames=3, output=tmp_path / "py",
                        height=32, width=48)  # Python callers pass the spec itself
    torch.testing.assert_close(load_trajectory(direct["trajectory"]).c2w, make_trajectory("pan", 5.0, 3).c2w)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--trajectory.preset", "spin"], "preset must be one of pan, tilt, "),
        (["--trajectory.pivot_depth", "0"], "pivot_depth must be > 0"),
        (["--trajectory.file_format", "obj"], "file_format must be one of auto, recapture, "),
        (["--trajectory.preset", "null"], "--trajectory needs a `preset`, a list of `moves` or a `file`"),
        (["--trajectory.file", "cams.json", "--trajectory.moves", "[{preset: pan, amount: 1}]"],
         "--trajectory has both `file` and `moves`"),
    ],
)
def test_command_errors_are_one_line_naming_the_option(tmp_path, args: list[str], needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        cli_main(["trajectory", *args, "--output", str(tmp_path / "out")])
    message = str(err.value)
    assert needle in message and "\n" not in message, message
    # the field is named as typed; TrajectorySpec.<field> while run_tool builds the spec before the command
    field = args[0].removeprefix("--trajectory.")
    assert re.search(rf"(--trajectory|TrajectorySpec)\.{field} |--trajectory (needs|has)", message), message
    assert not (tmp_path / "out").exists()
    from recapture.commands.trajectory import trajectory

    with pytest.raises(RecaptureError, match="--trajectory.preset must be one of pan, "):  # a dict from Python
        trajectory({"preset": "spin"}, output=tmp_path / "out")


def test_a_registered_preset_is_usable_by_name_everywhere(tmp_path, capsys: pytest.CaptureFixture) -> None:
    """A new preset is one `@register_preset` function: PRESETS, TrajectorySpec, the CLI and --help see it."""
    from recapture.cameras import PRESETS, MoveSpec
    from recapture.cameras.trajectory import PRESET_MOVES, register_preset, unregister_preset

    @register_preset("test_sidestep")
    def _sidestep(s: torch.Tensor, amount: float, d: float):
        return make_trajectory("truck", amount, s.numel()).c2w.double(), None, None

    try:
        assert "test_sidestep" in PRESETS and PRESETS[-1] == "test_sidestep"
        traj = TrajectorySpec(preset="test_sidestep", amount=0.3).build(4)
        torch.testing.assert_close(traj.c2w, make_trajectory("truck", 0.3, 4).c2w)
        assert traj.name.startswith("test_sidestep 0.3")
        moves = TrajectorySpec(moves=[MoveSpec("test_sidestep", 0.3), MoveSpec("pan", 5.0)]).build(4)
        assert moves.num_frames == 4
        assert "test_sidestep" in " ".join((TrajectorySpec.__doc__ or "").split())
        result = cli_main(["trajectory", "--trajectory.preset", "test_sidestep", "--trajectory.amount", "0.3",
                           "--num_frames", "4", "--output", str(tmp_path / "o"), "--height", "32", "--width", "48"])
        torch.testing.assert_close(load_trajectory(result["trajectory"]).c2w, traj.c2w)
        with pytest.raises(SystemExit):
            cli_main(["trajectory", "--help"])
        assert "dolly_zoom or test_sidestep" in " ".join(capsys.readouterr().out.split())
    finally:
        unregister_preset("test_sidestep")
    assert "test_sidestep" not in PRESETS and "test_sidestep" not in PRESET_MOVES
    assert "test_sidestep" not in (TrajectorySpec.__doc__ or "")
    with pytest.raises(RecaptureError, match="preset must be one of pan, .*, dolly_zoom, got 'test_sidestep'"):
        TrajectorySpec(preset="test_sidestep")
