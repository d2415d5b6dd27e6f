"""Scores, per-scene records and the Table-2-style results of a Kubric-4D benchmark run.

Every method's video is scored against the ground truth with the GCD recipe (benchmarks spec 1.8):
PSNR / SSIM (skimage-exact) and LPIPS v0.1 over all pixels, over the occluded pixels (``_occ``: the
target pixels the input view cannot see) and over the visible ones (``_vis``); per video the
nanmean over frames. Frames identical to the target (infinite PSNR: in gradual mode the input
video's first frame is the target's) are left out of the PSNR mean, by the same function as ``recapture
evaluate`` (:func:`~recapture.metrics.video_psnr`); the scene JSON stores NaN/inf as ``null``
(:func:`json_score`, JSON has neither). The table averages over scenes, ignoring scenes where a value is undefined
(an empty occluded region); ``n`` says how many scenes each mean covers.

Methods: ``input`` (baseline: the input video itself), ``anchor`` (baseline: the anchor video, no
fine-tuning), ``recapture`` (the refined video). The paper's Table 2 rows are printed next to them
for reference, labelled as such.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recapture.metrics import video_lpips, video_psnr, video_ssim
from recapture.metrics.vbench import temporal_flickering
from recapture.utils import RecaptureError, atomic_path, write_json

if TYPE_CHECKING:
    from recapture.benchmark.sweep import SceneOutput
    from recapture.data.kubric.protocol import EvalSample

__all__ = [
    "METHODS",
    "METRICS",
    "PAPER_TABLE2",
    "aggregate",
    "json_score",
    "load_scene_results",
    "results_markdown",
    "scene_record",
    "score_sample",
    "score_video",
    "write_results",
]

METHODS: dict[str, str] = {
    "input": "Input video (baseline)",
    "anchor": "Anchor video (baseline, no fine-tuning)",
    # the ablation rows (kubric.ablation: true), the paper's Table 3 plus two baselines
    "inpaint": "Anchor + OpenCV Telea inpainting (baseline)",
    "prior": "Prior sampled without fine-tuning (baseline)",
    "temporal": "+ temporal LoRA with mask (temporal-only fine-tuning)",
    "generated": "ReCapture before SDEdit (both LoRAs, generated)",
    "recapture": "ReCapture (refined)",
    "target": "Ground-truth novel view (reference: its flickering)",
}
ABLATION_LABELS = {"generated": "++ spatial LoRA (both LoRAs, before SDEdit)",
                   "recapture": "+++ SDEdit = ReCapture (refined)"}
METRICS = ("psnr", "ssim", "lpips", "psnr_occ", "ssim_occ", "lpips_occ", "psnr_vis", "ssim_vis", "lpips_vis",
           "flicker")
TABLE_METRICS = ("psnr", "ssim", "lpips", "psnr_occ", "ssim_occ", "lpips_occ", "flicker")
TABLE_HEADER = ("PSNR ↑", "SSIM ↑", "LPIPS ↓", "PSNR occ. ↑", "SSIM occ. ↑", "LPIPS occ. ↓", "Flicker ↑")
# ReCapture paper, Table 2 (Kubric-4D, 14 frames at 384x256, gradual); benchmarks spec.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "GCD": {"psnr": 20.30, "ssim": 0.587, "lpips": 0.408, "psnr_occ": 18.60, "ssim_occ": 0.527},
    "ReCapture": {"psnr": 20.92, "ssim": 0.596, "lpips": 0.402, "psnr_occ": 18.92, "ssim_occ": 0.541},
}


def json_score(x: Tensor) -> float | None:
    """A one-video score as the scene JSON stores it: the serialisation step of the benchmark's scores.

    The value itself comes from the metric functions ``recapture evaluate`` uses
    (:func:`~recapture.metrics.video_psnr`, ``video_ssim``, ``video_lpips``), so the PSNR is aggregated by
    the project's one rule (:func:`~recapture.metrics.image.mean_frame_psnr`). Only here, because JSON has
    neither NaN nor inf, an undefined score (NaN: an empty region) and an infinite one (inf: every
    defined frame equal to the target) become ``None`` (``null``), which :func:`aggregate` skips.
    ``recapture evaluate`` keeps ``inf`` in its in-memory report.
    """
    v = float(x.reshape(-1)[0])
    return None if math.isnan(v) or math.isinf(v) else v


@torch.no_grad()
def score_video(pred: Tensor, target: Tensor, occluded: Tensor, lpips: Any = None) -> dict[str, float | None]:
    """PSNR/SSIM(/LPIPS) of one video over all, occluded and visible pixels.

    Args:
        pred: ``(T, 3, H, W)`` in [0, 1].
        target: ``(T, 3, H, W)`` ground truth.
        occluded: ``(T, 1, H, W)`` {0, 1}: 1 where the input view cannot see the target pixel.
        lpips: a loaded :class:`~recapture.metrics.LPIPS`, or ``None`` to skip LPIPS.

    Returns:
        ``{metric: value}`` for :data:`METRICS` (``None`` where undefined, e.g. an empty region or no LPIPS,
        and for an all-exact video's infinite PSNR: see :func:`json_score`).
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3 or not pred.is_floating_point():
        raise RecaptureError(f"score_video: pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal float "
                             "(T, 3, H, W) videos in [0, 1]")
    if occluded.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise RecaptureError(f"score_video: occluded must be (T, 1, H, W) = {(pred.shape[0], 1, *pred.shape[2:])}, "
                             f"got {tuple(occluded.shape)}")
    pred, target, occluded = pred.detach().cpu(), target.detach().cpu(), occluded.detach().cpu().to(pred.dtype)
    visible = 1.0 - occluded
    scores: dict[str, float | None] = {}
    for suffix, mask in (("", None), ("_occ", occluded), ("_vis", visible)):
        # the same function as ``recapture evaluate`` and the callbacks (exact frames left out of the mean)
        scores[f"psnr{suffix}"] = json_score(video_psnr(pred, target, mask))
        scores[f"ssim{suffix}"] = json_score(video_ssim(pred, target, mask))
        if lpips is None:
            scores[f"lpips{suffix}"] = None
        else:
            scores[f"lpips{suffix}"] = json_score(video_lpips(lpips, pred, target, mask))  # on the model's device
    # VBench temporal flickering of the video itself (1 = no change between frames; the target's own
    # value, with its camera motion, is the reference row of the ablation table)
    scores["flicker"] = temporal_flickering(pred) if pred.shape[0] >= 2 else None
    return {k: scores[k] for k in METRICS}


def score_sample(
    sample: EvalSample, output: SceneOutput, lpips: Any = None, baselines: bool = True
) -> dict[str, dict[str, float | None]]:
    """Scores of ReCapture (and of the input/anchor baselines and ablation rows) against ``sample.target_video``.

    ``generated`` (the video before SDEdit) is scored whenever the run kept it, so every benchmark
    shows what the refinement adds. The ablation rows are scored when ``output.ablation`` holds them
    (``kubric.ablation: true``): ``inpaint``, ``prior``, ``temporal``, and ``target`` (the ground
    truth itself, for its flickering).
    """
    videos = {"recapture": output.refined}
    if baselines:
        videos = {"input": sample.input_video, "anchor": output.anchor, **videos}
    if output.generated is not None:
        videos["generated"] = output.generated
    if output.ablation:
        videos.update(output.ablation)
        videos["target"] = sample.target_video
    videos = {m: videos[m] for m in METHODS if m in videos}
    return {m: score_video(v, sample.target_video, sample.occluded_mask, lpips) for m, v in videos.items()}


def scene_record(
    sample: EvalSample, output: SceneOutput, scores: dict[str, dict[str, float | None]], timings: dict[str, float]
) -> dict[str, Any]:
    """The JSON-able per-scene result."""
    return {
        "scene": sample.scene_id,
        "mode": sample.mode,
        "controls_source": sample.controls_source,
        "controls": sample.controls.to_dict(),
        "fps": sample.fps,
        "frame_indices": sample.frame_indices.tolist(),
        "resolution": sample.settings["resolution"],
        "num_frames": int(sample.input_video.shape[0]),
        "occluded_fraction": float(sample.occluded_mask.float().mean()),
        "anchor_coverage": float(output.anchor_mask.float().mean()),
        "metrics": scores,
        "timings_s": timings,
        "info": output.info,
    }


def write_eval_video(path: Path, sample: EvalSample, output: SceneOutput) -> Path:
    """``input | target | anchor | ReCapture | occluded`` side by side (the occluded region tinted)."""
    from recapture.io import make_grid, overlay_mask, write_video

    tiles = [sample.input_video, sample.target_video, output.anchor, output.refined,
             overlay_mask(sample.target_video, 1.0 - sample.occluded_mask)]
    grid = make_grid(tiles, ["input", "target", "anchor", "ReCapture", "occluded"])
    return write_video(path, grid, sample.fps)


def load_scene_results(out: Path, scene_ids: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Read ``<out>/scenes/<scene>.json`` for each scene: ``(records, missing scene ids)``."""
    records, missing = [], []
    for scene_id in scene_ids:
        path = Path(out) / "scenes" / f"{scene_id}.json"
        if not path.is_file():
            missing.append(scene_id)
            continue
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise RecaptureError(f"{path} is not valid JSON ({err}); delete it to rerun {scene_id}") from err
    return records, missing


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Mean over scenes of every method's metrics: ``{method: {metric: {"mean", "n"}}}`` (undefined values skipped)."""
    table: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for method in METHODS:
        rows = [r["metrics"][method] for r in records if method in r["metrics"]]
        if not rows:
            continue
        table[method] = {}
        for metric in METRICS:
            values = [float(row[metric]) for row in rows if row.get(metric) is not None]
            table[method][metric] = {"mean": sum(values) / len(values) if values else None, "n": len(values)}
    return table


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if metric.startswith("psnr") else f"{value:.3f}"


def results_markdown(
    means: dict[str, dict[str, dict[str, float | int | None]]],
    records: Sequence[dict[str, Any]],
    missing: Sequence[str],
    settings: dict[str, Any],
    lpips_note: str | None = None,
) -> str:
    """The Table-2-style Markdown report."""
    sources = sorted({r["controls_source"] for r in records}) or ["-"]
    res = records[0]["resolution"] if records else settings.get("resolution")
    size = f"{res[1]}x{res[0]}" if isinstance(res, (list, tuple)) else str(res)
    frames = records[0]["num_frames"] if records else settings["protocol"]["num_frames"]
    lines = [
        "# Kubric-4D benchmark (GCD protocol)",
        "",
        f"{len(records)} scene(s) from `{settings['scenes']}`, mode `{settings['mode']}`, {frames} frames at "
        f"{size}, depth `{settings['depth_source']}`, controls: "
        + ", ".join(f"`{s}`" for s in sources)
        + (" (NOT GCD's evaluation pairs: seeded fallback sampler)" if "fallback-sampler" in sources else "")
        + ".",
        "",
        "| Method | " + " | ".join(TABLE_HEADER) + " | scenes |",
        "|---|" + "---:|" * (len(TABLE_HEADER) + 1),
    ]
    ablation = "temporal" in means or "prior" in means
    for method, label in METHODS.items():
        if ablation:
            label = ABLATION_LABELS.get(method, label)
        if method in means:
            row = means[method]
            n = max(int(row[m]["n"] or 0) for m in ("psnr", "ssim", "flicker"))
            lines.append(f"| {label} | " + " | ".join(_fmt(row[m]["mean"], m) for m in TABLE_METRICS) + f" | {n} |")
    for name, row in PAPER_TABLE2.items():
        lines.append(f"| *{name} (paper, Table 2; reference)* | "
                     + " | ".join(_fmt(row.get(m), m) for m in TABLE_METRICS) + " | – |")
    lines += [
        "",
        "Means over scenes (per scene: nanmean over frames). Occluded (occ.) = target pixels the input view "
        "cannot see; a scene without such pixels is left out of the occ. means. The paper rows come from "
        "the ReCapture paper (real data, GCD's official controls) and are not produced by this run.",
    ]
    if lpips_note:
        lines += ["", lpips_note + "."]
    if missing:
        lines += ["", f"**Missing {len(missing)} scene(s)** (not finished yet or failed; rerun to complete): "
                  + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def _csv_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        for method in METHODS:
            if method in r["metrics"]:
                rows.append({"scene": r["scene"], "method": method, **r["metrics"][method],
                             "occluded_fraction": r["occluded_fraction"], "controls_source": r["controls_source"],
                             "mode": r["mode"]})
    return rows


def write_results(
    out: Path, scene_ids: Sequence[str], settings: dict[str, Any], lpips: str | None = None
) -> dict[str, Any]:
    """Aggregate the scene JSONs into ``results.csv``, ``results.md`` and ``results.json`` (atomically).

    Args:
        out: the benchmark's output folder.
        scene_ids: the scenes the run was asked to evaluate (missing ones are listed).
        settings: the benchmark settings (for the report).
        lpips: a note printed under the table (e.g. why LPIPS was skipped).

    Returns:
        ``results.json``'s content: ``means``, flat ``eval`` metrics, the per-method ``table``,
        ``num_scenes``, ``missing``.
    """
    out = Path(out)
    records, missing = load_scene_results(out, scene_ids)
    means = aggregate(records)
    rows = _csv_rows(records)
    columns = ["scene", "method", *METRICS, "occluded_fraction", "controls_source", "mode"]
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in columns} for row in rows)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(results_markdown(means, records, missing, settings, lpips))
    flat = {}
    for method, row in means.items():
        prefix = "eval/" if method == "recapture" else f"eval/{method}/"
        flat.update({prefix + m: v["mean"] for m, v in row.items() if v["mean"] is not None})
    table = [{"method": method, **{m: v["mean"] for m, v in row.items()}} for method, row in means.items()]
    summary = {"num_scenes": len(records), "missing": missing, "means": means, "eval": flat, "table": table,
               "settings": settings}
    write_json(out / "results.json", summary)
    return summary
