"""Callbacks that turn a fine-tuning run into the user's outputs.

All write into the run folder (``trainer.default_root_dir``), atomically, on the global-zero rank.
They fill the module's declared :class:`~recapture.training.results.RunResult` and run at the end
of ``fit`` after the callbacks whose results they read, whatever their order in the config
(:func:`pipeline_order`: each names those in ``after``, and the ones it cannot do without in
``needs``). The documented order: ``StepTimer`` (optional) -> ``ExportLoRA`` -> ``GenerateVideo`` ->
``SDEditRefine`` -> ``LogVideos`` -> ``MetricsCallback`` -> ``RunReport``. Each can be left out
of ``trainer.callbacks``.

Run folder::

    <run>/anchor.mp4 mask.mp4 preview.mp4 trajectory.json    (stage 1, written at setup)
    <run>/generated.mp4 refined.mp4 comparison.mp4 videos.mp4 (stage 3)
    <run>/lora/spatial/ lora/temporal/                        (diffusers LoRA safetensors)
    <run>/config.yaml report.json checkpoints/
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from recapture.metrics import MetricWeights
from recapture.training.results import RunResult
from recapture.utils import RecaptureError, write_json

log = logging.getLogger(__name__)


def run_dir(trainer: Trainer) -> Path:
    """The run folder: ``trainer.default_root_dir``."""
    return Path(trainer.default_root_dir)


def _results(pl_module: LightningModule) -> RunResult:
    """The run's declared result object (``pl_module.result``; a plain module gets one on first use)."""
    result = getattr(pl_module, "result", None)
    if not isinstance(result, RunResult):
        result = RunResult()
        pl_module.result = result
    return result


def _record_file(pl_module: LightningModule, name: str, path: Path) -> None:
    _results(pl_module).files[name] = str(path)


class _Ordered(Callback):
    """An output callback. ``after``: the callbacks whose results it reads (they run before it when
    present); ``needs``: those it cannot work without (``pipeline_order`` refuses a list lacking them)."""

    after: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


def pipeline_order(callbacks: list[Callback]) -> list[Callback]:
    """``callbacks`` reordered so that every output callback runs after the ones it reads (``after``).

    Other callbacks keep their place before the output callbacks. Stable: callbacks without a
    dependency between them keep the config's order.

    Raises:
        RecaptureError: an output callback ``needs`` one that is not in the list (names the fix).
    """
    present = {type(cb).__name__ for cb in callbacks}
    for cb in callbacks:
        for need in getattr(cb, "needs", ()):
            if need not in present:
                raise RecaptureError(
                    f"{type(cb).__name__} needs {need} in trainer.callbacks (add "
                    f"`- class_path: recapture.training.callbacks.{need}` before it)"
                )
    others = [cb for cb in callbacks if not isinstance(cb, _Ordered)]
    pending = [cb for cb in callbacks if isinstance(cb, _Ordered)]
    ordered: list[Callback] = []
    while pending:
        names = {type(cb).__name__ for cb in pending}
        ready = next(cb for cb in pending if not (set(cb.after) & (names - {type(cb).__name__})))
        ordered.append(ready)
        pending.remove(ready)
    return others + ordered


class ExportLoRA(_Ordered):
    """Save the two LoRAs as diffusers LoRA safetensors in ``<run>/<dirname>/{spatial,temporal}/``.

    Args:
        dirname: folder inside the run folder.
    """

    after = ("StepTimer",)

    def __init__(self, dirname: str = "lora") -> None:
        self.dirname = dirname

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from recapture.adaptation import save_lora

        for name in ("spatial", "temporal"):
            path = save_lora(pl_module.unet, name, run_dir(trainer) / self.dirname / name)
            _record_file(pl_module, f"lora_{name}", path)
        log.info("saved LoRAs to %s", run_dir(trainer) / self.dirname)


class GenerateVideo(_Ordered):
    """Generate the re-angled video with both LoRAs (first anchor frame as the image prompt).

    Args:
        at_end: generate ``generated.mp4`` when training ends.
        every_n_steps: also generate ``progress/step_XXXXXX.mp4`` every N steps to watch progress
            (``None``: never; each costs one full sampling run).
    """

    after = ("StepTimer", "ExportLoRA")

    def __init__(self, at_end: bool = True, every_n_steps: int | None = None) -> None:
        self.at_end = at_end
        self.every_n_steps = every_n_steps

    def _generate(self, trainer: Trainer, pl_module: LightningModule) -> torch.Tensor:
        # the sampler puts the UNet in eval mode and restores its mode, adapters and grads afterwards
        frames, seconds = generate_video(pl_module.components, trainer.datamodule.build_anchor(), pl_module.sampling)
        _results(pl_module).timings["generate_s"] = seconds
        return frames

    @rank_zero_only
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        n = self.every_n_steps
        if not n or trainer.global_step % n or trainer.global_step == 0:
            return
        from recapture.io import write_video

        frames = self._generate(trainer, pl_module)
        path = write_video(run_dir(trainer) / "progress" / f"step_{trainer.global_step:06d}.mp4", frames,
                           trainer.datamodule.video_fps)
        _log_video(trainer, "progress/generated", path, trainer.datamodule.video_fps)

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.at_end:
            return
        from recapture.io import write_video

        frames = self._generate(trainer, pl_module)
        _results(pl_module).generated = frames
        path = write_video(run_dir(trainer) / "generated.mp4", frames, trainer.datamodule.video_fps)
        _record_file(pl_module, "generated", path)
        log.info("wrote %s", path)


class SDEditRefine(_Ordered):
    """SDEdit refinement of the generated video with the spatial LoRA only (temporal LoRA off).

    Writes ``refined.mp4`` and ``comparison.mp4`` (source | anchor | refined).

    Args:
        strength: overrides ``model.refine.strength`` when set (0 returns the video unchanged).
    """

    after = ("GenerateVideo",)
    needs = ("GenerateVideo",)

    def __init__(self, strength: float | None = None) -> None:
        self.strength = strength

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from dataclasses import replace

        results = _results(pl_module)
        if results.generated is None:
            raise RecaptureError("SDEditRefine needs GenerateVideo(at_end=true) in trainer.callbacks")
        config = pl_module.refine if self.strength is None else replace(pl_module.refine, strength=self.strength)
        anchor = trainer.datamodule.build_anchor()
        refined, seconds = refine_video(pl_module.components, results.generated, anchor, config)
        results.timings["refine_s"] = seconds
        results.refined = refined
        files = write_refined(run_dir(trainer), anchor, refined, trainer.datamodule.video_fps)
        for name, path in files.items():
            _record_file(pl_module, name, path)


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

    Args:
        metrics: VBench (no-reference) metric names, comma-separated or a list.
        anchor_agreement: compute ``anchor_psnr``/``anchor_ssim`` over the anchor's valid pixels.
        video: which video to score: ``refined`` (falls back to ``generated``) or ``generated``.
        weights: where the metric models come from (see :class:`recapture.metrics.MetricWeights`).
    """

    after = ("GenerateVideo", "SDEditRefine")
    needs = ("GenerateVideo",)

    def __init__(
        self,
        metrics: str | list[str] = "temporal_flickering",
        anchor_agreement: bool = True,
        video: str = "refined",
        weights: MetricWeights | None = None,
    ) -> None:
        self.metrics = metrics
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
        results.metrics = scores
        log.info("metrics: %s", ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        for lg in trainer.loggers:
            lg.log_metrics({f"eval/{k}": v for k, v in scores.items()}, step=trainer.global_step)
        _log_table(trainer, "eval/metrics", scores)


class StepTimer(_Ordered):
    """Time every training step by kind (temporal / spatial) and record the peak accelerator memory.

    Adds ``step_temporal_s`` / ``step_spatial_s`` (medians, the first step of each kind left out as
    warm-up when there are more) and ``train_peak_memory_gb`` to the run's timings (``report.json``)
    and logs ``timing/step_<kind>_s`` every step. It synchronises the device at step boundaries to
    measure: leave it out of production runs; ``benchmarks/gpu_check.py`` uses it.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self._kind = ""
        self.times: dict[str, list[float]] = {"temporal": [], "spatial": []}

    @staticmethod
    def _sync(pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._sync(pl_module)
        self._kind = pl_module.step_kind()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._sync(pl_module)
        seconds = time.perf_counter() - self._t0
        self.times[self._kind].append(seconds)
        pl_module.log(f"timing/step_{self._kind}_s", seconds, on_step=True, batch_size=1)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        timings = _results(pl_module).timings
        for kind, values in self.times.items():
            if values:
                kept = values[1:] if len(values) > 1 else values
                timings[f"step_{kind}_s"] = float(torch.tensor(kept).median())
        if pl_module.device.type == "cuda":
            timings["train_peak_memory_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30


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


def generate_video(components: Any, anchor: Any, sampling: Any) -> tuple[torch.Tensor, float]:
    """Sample with both LoRAs, the first anchor frame as the image prompt: ``(frames, seconds)``."""
    from recapture.sampling import generate

    frames = anchor.anchor.frames
    t0 = time.perf_counter()
    out = generate(components, frames[0], frames.shape[0], sampling, anchor=frames)
    return out.frames.cpu(), time.perf_counter() - t0


def refine_video(components: Any, generated: torch.Tensor, anchor: Any, refine: Any) -> tuple[torch.Tensor, float]:
    """SDEdit refinement with the spatial LoRA only: ``(frames, seconds)``."""
    from recapture.sampling import sdedit_refine

    t0 = time.perf_counter()
    out = sdedit_refine(components, generated, anchor.anchor.frames[0], refine)
    return out.frames.cpu(), time.perf_counter() - t0


def write_refined(out_dir: Path, anchor: Any, refined: torch.Tensor, fps: float) -> dict[str, Path]:
    """Write ``refined.mp4`` and ``comparison.mp4`` (source | anchor | refined) into ``out_dir``."""
    from recapture.io import make_grid, write_video

    grid = make_grid([anchor.source, anchor.anchor.frames, refined], ["source", "anchor", "refined"])
    return {
        "refined": write_video(out_dir / "refined.mp4", refined, fps),
        "comparison": write_video(out_dir / "comparison.mp4", grid, fps),
    }


def _peak_rss_gb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    except Exception:  # pragma: no cover - not on every platform
        return None


def _log_table(trainer: Trainer, key: str, row: dict[str, float]) -> None:
    """Log one row of numbers as a W&B table (other loggers get them via ``log_metrics``)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.log_table(key=key, columns=list(row), data=[list(row.values())])


def _log_video(trainer: Trainer, key: str, path: Path, fps: float) -> None:
    """Log an mp4 to W&B loggers (by path: wandb.Video from arrays needs moviepy)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            lg.experiment.log({key: wandb.Video(str(path), format="mp4"), "trainer/global_step": trainer.global_step})


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class StepProgress(Callback):
    """One progress line every ``every_n_steps`` steps: step/total, step kind, loss, s/step, elapsed, ETA.

    Meant for log files (SLURM, nohup, CI), where a progress bar prints nothing for minutes and then
    one line: ``recapture fit`` adds it when stderr is not a terminal (``when: auto``).

    Args:
        every_n_steps: steps between lines (the first and the last step always print).
        when: ``auto`` (only when stderr is not a terminal), ``always`` or ``never``.
    """

    def __init__(self, every_n_steps: int = 10, when: str = "auto") -> None:
        if when not in ("auto", "always", "never"):
            raise RecaptureError(f"StepProgress(when={when!r}) must be auto, always or never")
        self.every_n_steps = max(1, int(every_n_steps))
        self.when = when
        self.lines: list[str] = []
        self._t0: float | None = None
        self._start = 0

    def active(self) -> bool:
        import sys

        return self.when == "always" or (self.when == "auto" and not sys.stderr.isatty())

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0, self._start = time.perf_counter(), trainer.global_step

    @rank_zero_only
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any) -> None:
        if not self.active() or self._t0 is None:
            return
        step, total = trainer.global_step, trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if not (step == self._start + 1 or step % self.every_n_steps == 0 or step == total):
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        elapsed = time.perf_counter() - self._t0
        per_step = elapsed / max(1, step - self._start)
        of = f"/{total} ({100 * step / total:.0f}%)" if total else ""
        eta = f", eta {_duration(per_step * (total - step))}" if total else ""
        kind = getattr(pl_module, "schedule", None)
        kind = f" {kind.kind(step - 1)}" if kind is not None else ""
        value = f" loss {float(loss.detach()):.4g}" if isinstance(loss, torch.Tensor) else ""
        line = f"step {step}{of}{kind}{value} | {per_step:.2f} s/step, elapsed {_duration(elapsed)}{eta}"
        self.lines.append(line)
        log.info(line)
