"""``recapture evaluate``: score prediction videos against targets and write a JSON + Markdown report."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recapture.metrics import MetricModels, MetricSet, MetricWeights, parse_metric_names
from recapture.metrics.registry import describe
from recapture.utils import RecaptureError, atomic_path, check_output_folder, write_json

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
POSE_SUFFIXES = (".txt", ".json", ".npy")


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES for c in path.iterdir())


def _is_single(path: Path) -> bool:
    """A video file, a single image, or a folder of frames (as opposed to a folder of videos)."""
    return path.is_file() or _is_frame_folder(path)


def _collection(path: Path, what: str, suffixes: tuple[str, ...], dirs: bool = True) -> dict[str, Path]:
    """Children of a folder usable as ``what``, by name (file stem or folder name)."""
    out: dict[str, Path] = {}
    for child in sorted(path.iterdir()):
        ok = (child.is_file() and child.suffix.lower() in suffixes) or (dirs and child.is_dir())
        if not ok or child.name.startswith("."):
            continue
        name = child.stem if child.is_file() else child.name
        if name in out:
            raise RecaptureError(
                f"{what}: both {out[name].name} and {child.name} in {path} are named {name!r}; keep one"
            )
        out[name] = child
    if not out:
        raise RecaptureError(f"{what}: {path} holds no {'/'.join(suffixes)} files or frame folders")
    return out


def _match(
    names: list[str], path: Path | None, what: str, suffixes: tuple[str, ...], shared_ok: bool = False
) -> dict[str, Path | None]:
    """Map each prediction name to its ``what`` file in folder ``path`` (by name)."""
    if path is None:
        return dict.fromkeys(names)
    if not path.exists():
        raise RecaptureError(f"{what} {path} does not exist")
    if shared_ok and path.is_file():
        return dict.fromkeys(names, path)
    if not path.is_dir():
        raise RecaptureError(
            f"--pred is a folder of videos, so {what} must be a folder of files named like them, got {path}"
        )
    found = _collection(path, what, suffixes)
    missing = [n for n in names if n not in found]
    if missing:
        raise RecaptureError(
            f"{what}: no match in {path} for prediction(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
            f"files are matched by name (available: {sorted(found)[:10]})"
        )
    return {n: found[n] for n in names}


@dataclass
class _Item:
    pred: Path
    target: Path | None
    mask: Path | None
    camera: Path | None
    trajectory: Path | None


def _pair_up(
    pred: Path, target: Path | None, mask: Path | None, camera: Path | None, trajectory: Path | None
) -> dict[str, _Item]:
    if not pred.exists():
        raise RecaptureError(f"--pred {pred} does not exist")
    if _is_single(pred):
        for what, p in (
            ("--target", target),
            ("--mask", mask),
            ("--camera", camera),
            ("--trajectory", trajectory),
        ):
            if p is not None and not p.exists():
                raise RecaptureError(f"{what} {p} does not exist")
        name = pred.stem if pred.is_file() else pred.name
        return {name: _Item(pred, target, mask, camera, trajectory)}
    preds = _collection(pred, "--pred", VIDEO_SUFFIXES)
    names = list(preds)
    t = _match(names, target, "--target", VIDEO_SUFFIXES)
    m = _match(names, mask, "--mask", VIDEO_SUFFIXES + IMAGE_SUFFIXES)
    c = _match(names, camera, "--camera", POSE_SUFFIXES)
    r = _match(names, trajectory, "--trajectory", POSE_SUFFIXES, shared_ok=True)
    return {n: _Item(preds[n], t[n], m[n], c[n], r[n]) for n in names}


def _read(path: Path, fps: float | None, num_frames: int | None = None) -> tuple[Tensor, float]:
    """``(frames (T, 3, H, W) float32 in [0, 1], fps)``: the first ``num_frames`` frames (all if ``None``)."""
    from recapture.io import read_video

    video = read_video(path, num_frames=num_frames, fps=fps)
    return video.frames.float(), float(video.fps)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _count(path: Path, fps: float | None) -> int:
    """Frames in a video file or frame folder (1 for a single image), from headers: nothing decoded."""
    if _is_image(path):
        return 1
    from recapture.io import probe_video

    return int(probe_video(path, fps=fps)["num_frames"])


def _read_mask(path: Path, fps: float | None, num_frames: int | None = None) -> Tensor:
    """``(T, 1, H, W)`` float {0, 1}: white (> 0.5 after averaging the channels) is inside."""
    if _is_image(path):
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        return (torch.from_numpy(image)[None, None] > 0.5).float()
    frames, _ = _read(path, fps, num_frames)
    return (frames.mean(dim=1, keepdim=True) > 0.5).float()


@dataclass(frozen=True)
class _Reading:
    """How the videos are read: the frame rate to assume, the frames scored, the size compared at."""

    size: tuple[int, int] | str | None  # (H, W), "target" or None
    max_frames: int | None
    fps: float | None


def _reading(size: str | None, max_frames: int | None, fps: float | None) -> _Reading:
    if max_frames is not None and max_frames < 1:
        raise RecaptureError(f"--max_frames must be >= 1, got {max_frames}")
    return _Reading(_parse_size(size), max_frames, fps)


def _parse_size(size: str | None) -> tuple[int, int] | str | None:
    if size is None or size == "target":
        return size
    try:
        w, h = (int(v) for v in size.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise RecaptureError(f"--size {size!r} is not 'target' or WIDTHxHEIGHT (e.g. 384x256)") from None
    return h, w


def _resize(frames: Tensor, hw: tuple[int, int], nearest: bool = False) -> Tensor:
    if tuple(frames.shape[-2:]) == hw:
        return frames
    if nearest:
        return F.interpolate(frames, size=hw, mode="nearest")
    return F.interpolate(frames, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _hw(x: Tensor) -> str:
    return f"{x.shape[-1]}x{x.shape[-2]}"


def _used(path: Path, reading: _Reading) -> int:
    """Frames of ``path`` that are scored, from the headers (nothing decoded)."""
    count = _count(path, reading.fps)
    return count if reading.max_frames is None else min(count, reading.max_frames)


def _read_pair(name: str, item: _Item, reading: _Reading) -> tuple[Tensor, Tensor | None, float]:
    """``(pred, target or None, fps)``, decoding only the frames that are scored (and nothing on a
    length mismatch)."""
    n_pred = _used(item.pred, reading)
    if item.target is not None:
        n_target = _used(item.target, reading)
        if n_target != n_pred:
            raise RecaptureError(
                f"{name}: the prediction has {n_pred} frames and the target {n_target}; "
                f"pass --max_frames {min(n_pred, n_target)} to score the first frames of each"
            )
    pred, rate = _read(item.pred, reading.fps, n_pred)
    target = None if item.target is None else _read(item.target, reading.fps, n_pred)[0]
    return pred, target, rate


def _same_size(name: str, pred: Tensor, target: Tensor | None, size: Any) -> tuple[Tensor, Tensor | None]:
    """Prediction and target resized as ``--size`` asks; an error if their sizes still differ."""
    if isinstance(size, tuple):
        pred = _resize(pred, size)
        target = None if target is None else _resize(target, size)
    elif size == "target" and target is not None:
        pred = _resize(pred, tuple(target.shape[-2:]))
    if target is not None and target.shape[-2:] != pred.shape[-2:]:
        raise RecaptureError(
            f"{name}: the prediction is {_hw(pred)} (WxH) and the target {_hw(target)}; pass --size target to "
            "resize the prediction to the target's size, or --size WxH to resize both"
        )
    return pred, target


def _fit_mask(name: str, mask: Tensor, pred: Tensor, size: Any) -> Tensor:
    """The mask at the prediction's size (nearest neighbour, only with ``--size``) and length."""
    if mask.shape[-2:] != pred.shape[-2:]:
        if size is None:
            raise RecaptureError(
                f"{name}: the mask is {_hw(mask)} but the videos are {_hw(pred)}; pass --size to resize it "
                "(nearest neighbour) or supply a mask of the same size"
            )
        mask = _resize(mask, tuple(pred.shape[-2:]), nearest=True)
    if mask.shape[0] == 1 and pred.shape[0] > 1:
        mask = mask.expand(pred.shape[0], -1, -1, -1)
    if mask.shape[0] != pred.shape[0]:
        raise RecaptureError(
            f"{name}: the mask has {mask.shape[0]} frames and the prediction {pred.shape[0]}"
        )
    return mask


def _load_item(name: str, item: _Item, reading: _Reading) -> dict[str, Any]:
    """One video's prediction, target and mask, decoded and brought to one size."""
    pred, target, rate = _read_pair(name, item, reading)
    pred, target = _same_size(name, pred, target, reading.size)
    mask = None
    if item.mask is not None:
        mask = _fit_mask(
            name, _read_mask(item.mask, reading.fps, _used(item.mask, reading)), pred, reading.size
        )
    return {"pred": pred, "target": target, "mask": mask, "fps": rate}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    digits = 4 if name.startswith(("ssim", "lpips")) else 2 if name.startswith("psnr") else 3
    return f"{value:.{digits}f}"


def _markdown(
    names: list[str], videos: dict[str, dict[str, float | None]], mean: dict[str, float | None]
) -> str:
    lines = ["| video | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for video, values in videos.items():
        lines.append(f"| {video} | " + " | ".join(_format(n, values[n]) for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(_format(n, mean[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def evaluate(
    pred: Path,
    target: Path | None = None,
    output: Path = Path("outputs/eval"),
    mask: Path | None = None,
    metrics: str = "psnr,ssim",
    size: str | None = None,
    max_frames: int | None = None,
    fps: float | None = None,
    camera: Path | None = None,
    trajectory: Path | None = None,
    object_class: str | None = None,
    weights: MetricWeights = MetricWeights(),
    progress: bool = True,
) -> dict[str, Any]:
    """Score prediction video(s) against target video(s); write DIR/metrics.json and DIR/metrics.md.

    A video is a video file or a folder of frame images; --pred may also be a folder of videos, in
    which case --target, --mask and --camera are folders matched by name (file stem or folder name).

    Args:
        pred: prediction video, or folder of videos.
        target: target video (or folder); needed by psnr, ssim, lpips and their masked variants.
        output: output folder for metrics.json (per video and mean) and metrics.md (a table).
        mask: mask video, single image or frame folder (or a folder of them); white (> 0.5) marks
            the pixels the masked metrics use (e.g. the occluded region). Adds psnr_masked,
            ssim_masked, lpips_masked for the image metrics requested.
        metrics: comma-separated names: @METRIC_NAMES@.
        size: None (sizes must match), 'target' (resize the prediction to the target's size) or
            WIDTHxHEIGHT such as 384x256 (resize prediction, target and mask).
        max_frames: score only the first N frames of each video (only those are decoded).
        fps: frame rate to assume, overriding the files' (frame folders otherwise count as 24 fps);
            dynamic_degree depends on it.
        camera: poses estimated from the prediction (COLMAP images.txt or folder, .json or .npy
            of camera-to-world matrices), or a folder of them matched by name.
        trajectory: the requested camera trajectory (same formats); one file is shared by all videos.
        object_class: COCO class the videos should show (object_class).
        weights: where the metric models come from (--weights.FIELD VALUE, or --weights FILE.yaml
            with the same keys); a model is loaded only when a requested metric needs it.
        progress: show a progress bar over videos and print the headline numbers and table path.

    Returns:
        the report written to metrics.json.
    """
    names = parse_metric_names(metrics, with_mask=mask is not None)
    reading = _reading(size, max_frames, fps)
    items = _pair_up(Path(pred), _opt(target), _opt(mask), _opt(camera), _opt(trajectory))
    output = check_output_folder(output, "--output")  # before any video is decoded
    new_set = partial(
        MetricSet, names, MetricModels(_as_weights(weights)), fps=fps, object_class=object_class
    )
    videos, mean = _score(items, new_set, reading, progress)
    report = {
        "metrics": names,
        "mean": mean,
        "videos": videos,
        "num_videos": len(videos),
        "settings": {"pred": str(pred), "target": _str(target), "mask": _str(mask), "size": size,
                     "max_frames": max_frames, "fps": fps, "camera": _str(camera), "trajectory": _str(trajectory)},
    }  # fmt: skip
    _write(output, report)
    if progress:  # a command-line run: say where the table is and what it says
        headline = ", ".join(f"{k} {_format(k, v)}" for k, v in mean.items())
        print(f"recapture evaluate: {len(videos)} video(s): {headline}\n  table: {output / 'metrics.md'}"
              f"\n  json:  {output / 'metrics.json'}")  # fmt: skip
    return report


if evaluate.__doc__:  # the --metrics help lists what the registry holds
    evaluate.__doc__ = evaluate.__doc__.replace("@METRIC_NAMES@", describe())


def _as_weights(weights: MetricWeights | dict[str, Any]) -> MetricWeights:
    """The command line hands the ``--weights.*`` options over as a dict (see ``cli.run_tool``), with
    ``__path__`` when they came from ``--weights FILE``."""
    if isinstance(weights, MetricWeights):
        return weights
    given = {k: v for k, v in weights.items() if not k.startswith("__")}
    unknown = set(given) - {f.name for f in fields(MetricWeights)}
    if unknown:
        raise RecaptureError(f"unknown --weights option(s) {sorted(unknown)}; see recapture evaluate --help")
    return MetricWeights(**given)


Scores = dict[str, float | None]


def _score(
    items: dict[str, _Item], new_set: Callable[[], MetricSet], reading: _Reading, progress: bool
) -> tuple[dict[str, Scores], Scores]:
    """``(scores per video, scores over all videos)``, reading one video at a time."""
    from tqdm.auto import tqdm

    total = new_set()
    videos: dict[str, Scores] = {}
    for name, item in tqdm(
        items.items(), desc="evaluate", unit="video", disable=not progress or len(items) < 2
    ):
        data = _load_item(name, item, reading)
        poses = _poses(item) if "pred_c2w" in total.inputs else (None, None)
        one = new_set()
        one.update(data["pred"], data["target"], data["mask"], data["fps"], *poses)
        videos[name] = {k: _finite(v) for k, v in one.compute().items()}
        total.merge(one)
    return videos, {k: _finite(v) for k, v in total.compute().items()}


def _write(output: Path, report: dict[str, Any]) -> None:
    write_json(output / "metrics.json", report)
    with atomic_path(output / "metrics.md") as tmp:
        tmp.write_text(_markdown(report["metrics"], report["videos"], report["mean"]))


def _opt(path: Path | str | None) -> Path | None:
    return None if path is None else Path(path)


def _str(path: Path | str | None) -> str | None:
    return None if path is None else str(path)


def _poses(item: _Item) -> tuple[Tensor, Tensor]:
    from recapture.metrics.camera import read_poses

    if item.camera is None or item.trajectory is None:
        raise RecaptureError(
            "camera metrics need --camera (poses estimated from the prediction) and --trajectory (requested poses)"
        )
    return read_poses(item.camera), read_poses(item.trajectory)
