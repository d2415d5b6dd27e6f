"""Output callbacks that report on the run: the videos grid and strip, the metrics, ``report.json``."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from recapture.metrics import MetricWeights
from recapture.training.callbacks.base import (
    _log_table,
    _log_video,
    _Ordered,
    _record_file,
    _results,
    run_dir,
)
from recapture.utils import RecaptureError, write_json

if TYPE_CHECKING:
    from recapture.anchor import AnchorVideo

log = logging.getLogger("recapture.training.callbacks")  # the name the logs have always shown


class LogVideos(_Ordered):
    """Write ``videos.mp4`` (anchor | mask | generated | refined) and log it to the loggers (W&B), and
    ``strip.png``: source | anchor | generated | refined at the first, middle and last frame."""

    after = ("GenerateVideo", "SDEditRefine")

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from recapture.io import make_grid, overlay_mask, save_image, write_video

        results = _results(pl_module)
        built = trainer.datamodule.build_anchor()
        anchor = built.anchor
        tiles = [anchor.frames, overlay_mask(anchor.frames, anchor.mask)]
        captions = ["anchor", "mask"]
        for name, video in results.videos().items():
            tiles.append(video)
            captions.append(name)
        path = write_video(run_dir(trainer) / "videos.mp4", make_grid(tiles, captions), trainer.datamodule.video_fps)
        _record_file(pl_module, "videos", path)
        _log_video(trainer, "videos/anchor_mask_generated_refined", path, trainer.datamodule.video_fps)
        strip = frame_strip(built.source, anchor.frames, results.videos())
        _record_file(pl_module, "strip", save_image(run_dir(trainer) / "strip.png", strip))


def frame_strip(source: torch.Tensor, anchor: torch.Tensor, videos: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(3, H', W')``: columns source | anchor | each video, rows the first, middle and last frame."""
    from recapture.io import make_grid

    t = anchor.shape[0]
    rows = sorted({0, t // 2, t - 1})
    names = ["source", "anchor", *videos]
    grid = make_grid([source, anchor, *videos.values()],
                     [[f"{n} (frame {i})" for i in range(t)] for n in names])
    return torch.cat([grid[i] for i in rows], dim=1)


class MetricsCallback(_Ordered):
    """Score the final video after generation and log the numbers (W&B table, ``report.json``).

    A user's own video has no ground truth, so by default the scores are:

    * ``anchor_psnr`` / ``anchor_ssim``: agreement of the video with the anchor over the pixels
      the anchor knows (its validity mask): how faithful the result is to the real content;
    * no-reference VBench dimensions listed in ``metrics`` (``temporal_flickering`` needs no model;
      ``subject_consistency``, ``background_consistency``, ... need their backbones in ``weights``).

    When the data module knows the exact novel view (``video: example``, the offline demo), it also
    scores against it: ``truth_psnr`` (all pixels) and ``truth_psnr_holes`` (the pixels the anchor
    left empty), the same for the anchor itself (``anchor_truth_psnr``, ``anchor_truth_psnr_holes``)
    and, when the refined video is scored, for the generated one before SDEdit (``generated_truth_*``).

    Args:
        metrics: VBench (no-reference) metric names, comma-separated or a list.
        anchor_agreement: compute ``anchor_psnr``/``anchor_ssim`` over the anchor's valid pixels.
        video: which video to score: ``refined`` (falls back to ``generated``) or ``generated``.
        weights: where the metric models come from (see :class:`recapture.metrics.MetricWeights`).
        ground_truth: score against the exact novel view when the data module has one.
    """

    after = ("GenerateVideo", "SDEditRefine")
    needs = ("GenerateVideo",)

    def __init__(
        self,
        metrics: str | list[str] = "temporal_flickering",
        anchor_agreement: bool = True,
        video: str = "refined",
        weights: MetricWeights | None = None,
        ground_truth: bool = True,
    ) -> None:
        self.metrics = metrics
        self.ground_truth = ground_truth
        self.anchor_agreement = anchor_agreement
        self.video = video
        self.weights = weights
        self._models = None

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from recapture.metrics import MetricModels, compute_metrics

        results = _results(pl_module)
        pred = getattr(results, self.video, None)
        pred = results.generated if pred is None else pred
        if pred is None:
            raise RecaptureError("MetricsCallback needs GenerateVideo(at_end=true) in trainer.callbacks")
        if self._models is None:
            self._models = MetricModels(self.weights)
        anchor = trainer.datamodule.build_anchor().anchor
        scores: dict[str, float] = {}
        names = [m for m in (self.metrics.split(",") if isinstance(self.metrics, str) else self.metrics) if m]
        if names:
            scores.update(compute_metrics(pred, metrics=names, fps=trainer.datamodule.fps, models=self._models))
        if self.anchor_agreement:
            agree = compute_metrics(pred, anchor.frames, mask=anchor.mask, metrics=("psnr", "ssim"))
            scores["anchor_psnr"] = agree["psnr_masked"]
            scores["anchor_ssim"] = agree["ssim_masked"]
        known = getattr(trainer.datamodule, "ground_truth", None) if self.ground_truth else None
        truth = known() if known is not None else None
        if truth is not None:
            scores.update(_truth_scores(pred, anchor, truth, results.generated if pred is not results.generated else None))
        results.metrics = scores
        log.info("metrics: %s", ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        for lg in trainer.loggers:
            lg.log_metrics({f"eval/{k}": v for k, v in scores.items()}, step=trainer.global_step)
        _log_table(trainer, "eval/metrics", scores)


def _truth_scores(
    pred: torch.Tensor, anchor: AnchorVideo, truth: torch.Tensor, generated: torch.Tensor | None = None
) -> dict[str, float]:
    """PSNR against the exact novel view, all pixels and the anchor's holes: the scored video, the
    anchor and (when the scored video is the refined one) the generated video before SDEdit."""
    from recapture.metrics import compute_metrics

    holes = 1.0 - anchor.mask.float()
    mask = holes if bool((holes > 0.5).any()) else None
    scores: dict[str, float] = {}
    videos = [("", pred), ("anchor_", anchor.frames)] + ([("generated_", generated)] if generated is not None else [])
    for prefix, video in videos:
        m = compute_metrics(video.float().cpu(), truth, mask=mask, metrics=("psnr",))
        scores[f"{prefix}truth_psnr"] = m["psnr"]
        if mask is not None:
            scores[f"{prefix}truth_psnr_holes"] = m["psnr_masked"]
    return scores


class RunReport(_Ordered):
    """Write ``report.json``: settings, per-stage timings, peak memory, anchor coverage, files, metrics."""

    after = ("StepTimer", "ExportLoRA", "GenerateVideo", "SDEditRefine", "LogVideos", "MetricsCallback")

    def __init__(self) -> None:
        self._t0_wall: float | None = None
        self._train_t0 = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0_wall = time.time()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _results(pl_module).timings["train_s"] = time.perf_counter() - self._train_t0

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from recapture.io import frames_digest

        results = _results(pl_module)
        datamodule = trainer.datamodule
        anchor = datamodule.build_anchor()
        started = min(t for t in (datamodule.started_at, self._t0_wall) if t is not None)
        report = {
            "run_dir": str(run_dir(trainer)),
            "global_step": trainer.global_step,
            "fps": {"source": datamodule.fps, "videos": datamodule.video_fps},
            "anchor": {k: v for k, v in anchor.report.items() if k not in ("coverage", "timings")},
            "coverage": anchor.report.get("coverage"),
            # what THIS run spent: a cache hit costs its loading time, and says so in "caches"
            "timings_s": {
                **{f"anchor_{k}": v for k, v in anchor.report.get("timings", {}).items()},
                **{k: v for k, v in datamodule.timings.items() if isinstance(v, (int, float))},
                **results.timings,
                "total_fit_s": time.time() - started,
            },
            "caches": {"anchor": anchor.report.get("cache"), "latents": datamodule.timings.get("latent_cache")},
            # sha256 of each video's frames as written: `generate --seed S` reproduces these exactly
            "frames_sha256": {k: frames_digest(v) for k, v in results.videos().items()},
            "peak_memory_gb": (torch.cuda.max_memory_allocated() / 2**30) if torch.cuda.is_available() else None,
            "peak_host_memory_gb": _peak_rss_gb(),
            "metrics": results.metrics,
            "files": results.files,
            "settings": {
                "components": vars(pl_module.components_config),
                "lora": vars(pl_module.lora),
                "objective": vars(pl_module.objective),
                "schedule": vars(pl_module.schedule),
                "sampling": vars(pl_module.sampling),
                "refine": vars(pl_module.refine),
            },
        }
        path = write_json(run_dir(trainer) / "report.json", report)
        log.info("wrote %s", path)
        for lg in trainer.loggers:
            lg.log_metrics({f"timing/{k}": v for k, v in report["timings_s"].items() if isinstance(v, (int, float))},
                           step=trainer.global_step)


def _peak_rss_gb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    except Exception:  # pragma: no cover - not on every platform
        return None

