"""`recapture evaluate` on PNG-folder and mp4 videos: matching, reports, errors, CLI parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.commands.evaluate import evaluate
from recapture.metrics import compute_metrics
from recapture.utils import RecaptureError


def _write_frames(folder: Path, frames: torch.Tensor) -> torch.Tensor:
    """Save (T, C, H, W) in [0, 1] as PNGs; return what the PNGs hold (8-bit levels)."""
    folder.mkdir(parents=True)
    q = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
    for t, frame in enumerate(q):
        array = frame.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(folder / f"{t:05d}.png")
    return q.float() / 255


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    """Two videos (PNG folders) with targets and masks, matched by name."""
    out = {"pred": {}, "target": {}, "mask": {}}
    for name in ("b_scene", "a_scene"):
        target = torch.rand(4, 3, 24, 32)
        pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
        mask = torch.zeros(4, 1, 24, 32)
        mask[:, :, 4:20, 8:30] = 1
        out["pred"][name] = _write_frames(tmp_path / "pred" / name, pred)
        out["target"][name] = _write_frames(tmp_path / "target" / name, target)
        out["mask"][name] = _write_frames(tmp_path / "mask" / name, mask)
    out["root"] = tmp_path
    return out


def test_folders_matched_by_name(dataset: dict) -> None:
    root = dataset["root"]
    report = evaluate(
        root / "pred", root / "target", root / "out", mask=root / "mask", metrics="psnr,ssim", progress=False
    )
    assert report["metrics"] == ["psnr", "psnr_masked", "ssim", "ssim_masked"]
    assert list(report["videos"]) == ["a_scene", "b_scene"]
    for name in ("a_scene", "b_scene"):
        ref = compute_metrics(
            dataset["pred"][name], dataset["target"][name], dataset["mask"][name], ("psnr", "ssim")
        )
        assert report["videos"][name] == pytest.approx(ref, abs=1e-6)
    mean_psnr = np.mean([report["videos"][n]["psnr"] for n in report["videos"]])
    assert report["mean"]["psnr"] == pytest.approx(mean_psnr)
    on_disk = json.loads((root / "out" / "metrics.json").read_text())
    assert on_disk["mean"] == pytest.approx(report["mean"])
    table = (root / "out" / "metrics.md").read_text()
    assert table.startswith("| video | psnr | psnr_masked | ssim | ssim_masked |") and "| **mean** |" in table


def test_single_mp4_with_resize_and_frame_limit(tmp_path: Path) -> None:
    from recapture.io import read_video, write_video

    target = torch.rand(5, 3, 32, 48)
    write_video(tmp_path / "pred.mp4", torch.rand(6, 3, 16, 24), fps=8)
    _write_frames(tmp_path / "target", target)
    with pytest.raises(RecaptureError, match="--max_frames 5"):
        evaluate(tmp_path / "pred.mp4", tmp_path / "target", tmp_path / "out", progress=False)
    with pytest.raises(RecaptureError, match="--size target"):
        evaluate(tmp_path / "pred.mp4", tmp_path / "target", tmp_path / "out", max_frames=5, progress=False)
    report = evaluate(
        tmp_path / "pred.mp4", tmp_path / "target", tmp_path / "out", metrics="psnr,temporal_flickering",
        size="target", max_frames=5, progress=False,
    )  # fmt: skip
    assert list(report["videos"]) == ["pred"]
    pred = read_video(tmp_path / "pred.mp4").frames[:5]
    up = torch.nn.functional.interpolate(
        pred, size=(32, 48), mode="bilinear", align_corners=False, antialias=True
    )
    tgt = read_video(tmp_path / "target").frames
    assert report["mean"]["psnr"] == pytest.approx(
        compute_metrics(up.clamp(0, 1), tgt, metrics="psnr")["psnr"], abs=1e-5
    )
    report = evaluate(
        tmp_path / "pred.mp4",
        tmp_path / "target",
        tmp_path / "out2",
        size="20x10",
        max_frames=5,
        progress=False,
    )
    assert np.isfinite(report["mean"]["ssim"])


def test_errors(dataset: dict) -> None:
    root = dataset["root"]
    (root / "pred" / "c_scene").mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "pred" / "c_scene" / "0.png")
    with pytest.raises(RecaptureError, match=r"no match .*\['c_scene'\]"):
        evaluate(root / "pred", root / "target", root / "out", progress=False)
    with pytest.raises(RecaptureError, match="unknown metric 'fid'; valid names: psnr"):
        evaluate(root / "pred", root / "target", root / "out", metrics="psnr,fid", progress=False)
    with pytest.raises(RecaptureError, match="does not exist"):
        evaluate(root / "nothing", root / "target", root / "out", progress=False)
    with pytest.raises(RecaptureError, match="WIDTHxHEIGHT"):
        evaluate(root / "pred", root / "target", root / "out", size="big", progress=False)
    assert not (root / "out").exists()


def test_cli_flags_parse(dataset: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from recapture import cli

    monkeypatch.setitem(cli.TOOL_COMMANDS, "evaluate", "recapture.commands.evaluate:evaluate")
    root = dataset["root"]
    report = cli.cli_main([
        "evaluate", "--pred", str(root / "pred" / "a_scene"), "--target", str(root / "target" / "a_scene"),
        "--output", str(root / "cli"), "--metrics", "ssim", "--progress", "false",
    ])  # fmt: skip
    assert list(report["videos"]) == ["a_scene"] and (root / "cli" / "metrics.json").is_file()


def test_nested_weight_flags_reach_the_models(dataset: dict, tmp_path: Path) -> None:
    from recapture import cli
    from recapture.metrics import MetricWeights

    root = dataset["root"]
    args = ["evaluate", "--pred", str(root / "pred" / "a_scene"), "--target", str(root / "target" / "a_scene"),
            "--output", str(root / "w"), "--metrics", "lpips", "--progress", "false"]  # fmt: skip
    with pytest.raises(RecaptureError, match=r"nope\.pth.*--weights\.lpips_alexnet"):
        cli.cli_main([*args, "--weights.lpips_alexnet", str(tmp_path / "nope.pth"), "--weights.device", "cpu"])
    (tmp_path / "weights.yaml").write_text(f"lpips_alexnet: {tmp_path / 'nope.pth'}\n")
    with pytest.raises(RecaptureError, match=r"nope\.pth"):
        cli.cli_main([*args, "--weights", str(tmp_path / "weights.yaml")])
    with pytest.raises(RecaptureError, match="--weights.lpips_alexnet"):
        evaluate(root / "pred", root / "target", root / "w", metrics="lpips", weights=MetricWeights(), progress=False)


def test_camera_metrics_from_pose_files(tmp_path: Path) -> None:
    _write_frames(tmp_path / "pred" / "v1", torch.rand(3, 3, 8, 8))
    _write_frames(tmp_path / "pred" / "v2", torch.rand(3, 3, 8, 8))
    eye = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    turned = eye.clone()
    turned[2, :3, :3] = torch.tensor(
        [[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64
    )  # 90 deg about x
    (tmp_path / "cams").mkdir()
    np.save(tmp_path / "cams" / "v1.npy", eye.numpy())
    np.save(tmp_path / "cams" / "v2.npy", turned.numpy())
    (tmp_path / "trajectory.json").write_text(json.dumps({"c2w": eye.tolist()}))
    report = evaluate(
        tmp_path / "pred", None, tmp_path / "out", metrics="camera,temporal_flickering",
        camera=tmp_path / "cams", trajectory=tmp_path / "trajectory.json", progress=False,
    )  # fmt: skip
    assert report["videos"]["v1"]["rot_err"] == pytest.approx(0.0, abs=1e-9)
    assert report["videos"]["v2"]["rot_err"] == pytest.approx(np.pi / 2)
    assert report["mean"]["rot_err"] == pytest.approx(np.pi / 4)
    with pytest.raises(RecaptureError, match="target"):
        evaluate(tmp_path / "pred", None, tmp_path / "out", metrics="psnr", progress=False)


def test_only_scored_frames_are_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a long target, a short prediction: the length check reads headers only, and --max_frames
    # decodes just the frames that are scored (of prediction, target and mask)
    import recapture.io as rio

    target = torch.rand(30, 3, 32, 48)
    rio.write_video(tmp_path / "target.mp4", target, fps=10)
    rio.write_video(tmp_path / "mask.mp4", torch.ones(30, 1, 32, 48), fps=10)
    _write_frames(tmp_path / "pred", target[:8])
    decoded: list[tuple[str, int]] = []
    original = rio.read_video

    def spy(path, *args, **kwargs):
        video = original(path, *args, **kwargs)
        decoded.append((Path(path).name, video.num_frames))
        return video

    monkeypatch.setattr(rio, "read_video", spy)
    with pytest.raises(
        RecaptureError, match="prediction has 8 frames and the target 30; pass --max_frames 8"
    ):
        evaluate(tmp_path / "pred", tmp_path / "target.mp4", tmp_path / "out", progress=False)
    assert decoded == []
    report = evaluate(
        tmp_path / "pred", tmp_path / "target.mp4", tmp_path / "out", mask=tmp_path / "mask.mp4",
        metrics="psnr", max_frames=5, progress=False,
    )  # fmt: skip
    assert sorted(decoded) == [("mask.mp4", 5), ("pred", 5), ("target.mp4", 5)]
    assert np.isfinite(report["mean"]["psnr"])
    assert report["mean"]["psnr_masked"] == pytest.approx(report["mean"]["psnr"])  # the mask is all white


def test_a_command_line_run_prints_the_headline_and_the_table_path(
    dataset: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    root = dataset["root"]
    report = evaluate(root / "pred" / "a_scene", root / "target" / "a_scene", root / "printed", metrics="psnr,ssim")
    out = capsys.readouterr().out
    assert "recapture evaluate: 1 video(s): psnr " in out and "ssim " in out
    assert f"table: {root / 'printed' / 'metrics.md'}" in out
    assert f"{report['mean']['psnr']:.2f}" in out


def test_one_psnr_rule_for_evaluate_the_callbacks_and_the_benchmark() -> None:
    """A frame identical to the target is left out of the video's PSNR mean everywhere (it used to be
    dropped by the benchmark but averaged, as inf, by evaluate and the callbacks)."""
    from recapture.benchmark.results import score_video
    from recapture.metrics import compute_metrics, psnr, video_psnr

    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 3, 16, 16, generator=g)
    pred = (target + 0.05 * torch.randn(4, 3, 16, 16, generator=g)).clamp(0, 1)
    pred[0] = target[0]  # the input's first frame in gradual mode
    expected = float(psnr(pred[1:], target[1:]).mean())
    assert float(video_psnr(pred, target)) == pytest.approx(expected)
    assert compute_metrics(pred, target, metrics=("psnr",))["psnr"] == pytest.approx(expected)
    occluded = torch.zeros(4, 1, 16, 16)
    assert score_video(pred, target, occluded)["psnr"] == pytest.approx(expected)
    assert float(video_psnr(target, target)) == float("inf")  # an exact video stays exact
