"""The Lightning side of ``recapture benchmark``: one FRESH ReCapture run per scene, from the parsed config.

:class:`LightningSceneRunner` re-instantiates ``model:``, ``data:`` and the trainer's callbacks from
the ``recapture benchmark`` config for every scene (so no LoRA weights, optimiser state, caches
or callback state leak between scenes), feeds the data module the evaluation sample
(``use_sample``: input video, GT depth, K, target trajectory) and fits a single-device trainer
(``devices=[local_rank]`` or the CPU; never a DDP group, whatever the launcher). Generation and
SDEdit refinement run in the trainer's ``GenerateVideo`` / ``SDEditRefine`` callbacks (added when
the config lacks them).

W&B: with a ``WandbLogger`` in ``trainer.logger`` every scene is its own run (``name=<scene>``,
``group=<kubric.wandb_group>``, ``job_type=scene``) and rank 0 adds a ``summary`` run with the
aggregate ``eval/...`` metrics. Under a W&B sweep agent the per-scene runs are skipped (the agent's
run id would capture them) and the summary goes to the agent's run, so the sweep sees ``eval/psnr``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from recapture.benchmark.results import METRICS
from recapture.benchmark.sweep import BenchmarkSettings, SceneOutput, dist_info, output_dir, run_sweep
from recapture.cameras import Trajectory
from recapture.data.kubric.protocol import EvalSample
from recapture.utils import RecaptureError, atomic_path

log = logging.getLogger(__name__)

__all__ = ["LightningSceneRunner", "run_benchmark"]

# trainer settings that change a scene's result (the rest: progress bars, logging cadence, ...)
_TRAINER_KEYS = ("max_steps", "max_epochs", "precision", "accumulate_grad_batches", "gradient_clip_val",
                 "gradient_clip_algorithm", "deterministic", "limit_train_batches")


@contextlib.contextmanager
def _as_rank_zero() -> Iterator[None]:
    """Each per-scene trainer is a world of one: make Lightning's rank-zero-only hooks run on every rank.

    ``rank_zero_only.rank`` is read from ``RANK``/``LOCAL_RANK``/``SLURM_PROCID`` at import, which
    would silence the output callbacks and W&B on every rank but the first.
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    previous = getattr(rank_zero_only, "rank", 0)
    rank_zero_only.rank = 0
    try:
        yield
    finally:
        rank_zero_only.rank = previous


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _is_output_callback(cb: Any) -> bool:
    """Callbacks that need the refined video (left out of the temporal-only ablation fit)."""
    from recapture.training.callbacks import LogVideos, MetricsCallback, RunReport, SDEditRefine

    return isinstance(cb, (SDEditRefine, LogVideos, MetricsCallback, RunReport))


def _finish_wandb(loggers: list[Any]) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


class LightningSceneRunner:
    """A :class:`~recapture.benchmark.sweep.SceneRunner` that fits a fresh ReCapture run per scene.

    Args:
        parser: the ``recapture benchmark`` subcommand parser.
        config: its parsed (not instantiated) config.
        trainer_class: the trainer class to build per scene.
        settings: the benchmark settings (depth source, seed).
        group: W&B group of the per-scene runs.
        weights: fingerprints of the SVD weights and the depth model
            (:func:`recapture.hub.weights_fingerprint`), part of the settings key; None for the tiny
            random set with ground-truth depth.
    """

    def __init__(self, parser: Any, config: Any, trainer_class: type, settings: BenchmarkSettings, group: str,
                 weights: dict[str, str] | None = None) -> None:
        self.parser = parser
        self.weights = weights
        self.config = config
        self.trainer_class = trainer_class
        self.settings = settings
        self.group = group
        self.under_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
        self._loggers: list[Any] = []
        self._step = 0
        self._sweep_noted = False

    def settings_key(self) -> Any:
        """``model:``, ``data:`` (minus folders and progress switches), the trainer's numerics and the
        weights' fingerprints (a prior retrained under the same name or path scores anew)."""
        d = self.config.clone().as_dict()
        data = dict(d.get("data") or {})
        for k in ("latent_cache_dir", "output_dir"):
            data.pop(k, None)
        data["anchor"] = {k: v for k, v in (data.get("anchor") or {}).items() if k not in ("cache_dir", "progress")}
        trainer = {k: (d.get("trainer") or {}).get(k) for k in _TRAINER_KEYS}
        key = {"model": d.get("model"), "data": data, "trainer": trainer}
        if self.weights is not None:
            key["weights"] = self.weights
        return key

    # ------------------------------------------------------------------ loggers
    def make_loggers(self, name: str, job_type: str, summary: bool = False) -> list[Any]:
        """Fresh loggers from ``trainer.logger`` with the run's name and (W&B) group and job type."""
        from lightning.pytorch.cli import instantiate_class
        from lightning.pytorch.loggers import WandbLogger

        spec = self.config.trainer.get("logger")
        entries = spec if isinstance(spec, list) else [spec]
        loggers = []
        for entry in entries:
            if entry is None or isinstance(entry, bool) or "class_path" not in entry:
                continue
            cls = _class(entry.class_path)
            init = entry.init_args.as_dict() if entry.get("init_args") is not None else {}
            if issubclass(cls, WandbLogger):
                if self.under_sweep and not summary:
                    if not self._sweep_noted:
                        log.warning("W&B sweep agent detected: no per-scene W&B runs; the summary goes to the sweep's run")
                        self._sweep_noted = True
                    continue
                init.update(id=None, version=None)
                if not self.under_sweep:
                    init.update(name=name, group=self.group, job_type=job_type)
            elif "name" in inspect.signature(cls).parameters:
                init["name"] = name
            loggers.append(instantiate_class((), {"class_path": entry.class_path, "init_args": init}))
        return loggers

    def _logger_flag(self) -> Any:
        spec = self.config.trainer.get("logger")
        # None/True: Lightning's default logger (under the scene's run folder); False: none
        return spec if spec is None or isinstance(spec, bool) else False

    # ------------------------------------------------------------------ per scene
    def _make_trainer(self, kwargs: Any, run_dir: Path, device: torch.device, refine: bool = True) -> Any:
        from lightning.fabric.plugins.environments import ClusterEnvironment, LightningEnvironment

        from recapture.training.callbacks import GenerateVideo, SDEditRefine, pipeline_order
        from recapture.training.cli import place_checkpoints, prefer_tqdm_progress

        kwargs = dict(kwargs)
        callbacks = list(kwargs.get("callbacks") or [])
        if not refine:  # an ablation fit: generation only
            callbacks = [cb for cb in callbacks if isinstance(cb, GenerateVideo) or not _is_output_callback(cb)]
        for needed in (GenerateVideo, SDEditRefine) if refine else (GenerateVideo,):
            if not any(isinstance(cb, needed) for cb in callbacks):
                callbacks.append(needed())
        callbacks = pipeline_order(callbacks)  # as ReCaptureCLI.before_fit
        plugins = kwargs.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        # a world of one: no SLURM/torchelastic environment detection, no process group
        plugins = [p for p in plugins if not isinstance(p, ClusterEnvironment)] + [LightningEnvironment()]
        cuda = device.type == "cuda"
        kwargs.update(
            accelerator="gpu" if cuda else "cpu",
            devices=[device.index or 0] if cuda else 1,
            strategy="auto",
            num_nodes=1,
            default_root_dir=str(run_dir),
            logger=self._loggers or self._logger_flag(),
            callbacks=callbacks,
            plugins=plugins,
        )
        trainer = self.trainer_class(**kwargs)
        prefer_tqdm_progress(trainer, self.config)
        place_checkpoints(trainer)  # as `recapture fit` does: <run>/checkpoints, with last.ckpt
        return trainer

    def _fit(
        self, cfg: Any, sample: EvalSample, trajectory: Trajectory, run_dir: Path, device: torch.device,
        refine: bool = True,
    ) -> tuple[Any, Any, Any, float]:
        """Instantiate ``cfg`` and fit it on ``sample``: ``(module, datamodule, trainer, seconds)``."""
        from lightning.pytorch import seed_everything

        with _as_rank_zero():
            seed_everything(self.settings.seed, workers=True, verbose=False)
            init = self.parser.instantiate_classes(cfg)
            module, datamodule = init.model, init.data
            depth = sample.input_depth if self.settings.depth_source == "gt" else None
            datamodule.use_sample(sample.input_video, sample.fps, depth=depth, K=sample.K, trajectory=trajectory,
                                  depth_name=f"gt:kubric4d:{sample.scene_id}")
            trainer = self._make_trainer(init.trainer, run_dir, device, refine=refine)
            t0 = time.perf_counter()
            trainer.fit(module, datamodule)
            return module, datamodule, trainer, time.perf_counter() - t0

    def run(self, sample: EvalSample, trajectory: Trajectory, run_dir: Path, device: torch.device) -> SceneOutput:
        """Fit a fresh module on ``sample`` (anchor -> masked fine-tuning -> generation -> refinement).

        With ``kubric.ablation`` also: the prior sampled without LoRAs, a temporal-only fit
        (``run_dir/ablation-temporal``) and the anchor inpainted by OpenCV.
        """
        cfg = self.config.clone()
        cfg.trainer.logger = False  # built per scene by make_loggers
        self._loggers = self.make_loggers(sample.scene_id, "scene")
        module, datamodule, trainer, fit_s = self._fit(cfg, sample, trajectory, run_dir, device)
        results = module.result
        if results.refined is None:
            raise RecaptureError(
                f"{sample.scene_id}: the fine-tuning run produced no refined video; keep GenerateVideo(at_end=true) "
                "and SDEditRefine in trainer.callbacks"
            )
        anchor = datamodule.build_anchor()
        self._step = trainer.global_step
        output = SceneOutput(
            refined=results.refined.cpu(),
            anchor=anchor.anchor.frames.cpu(),
            anchor_mask=anchor.anchor.mask.cpu(),
            generated=None if results.generated is None else results.generated.cpu(),
            timings={"fit_s": fit_s, **{k: float(v) for k, v in results.timings.items()}},
            info={
                "run_dir": str(run_dir),
                "global_step": trainer.global_step,
                "depth_source": self.settings.depth_source,
                "scene_scale": float(anchor.scene_scale),
                "anchor_coverage_mean": float(anchor.report.get("coverage_mean", float("nan"))),
            },
        )
        if self.settings.ablation:
            self._ablation(output, module, anchor, cfg, sample, trajectory, run_dir, device)
        del module, datamodule, trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return output

    def _ablation(
        self, output: SceneOutput, module: Any, anchor: Any, cfg: Any, sample: EvalSample, trajectory: Trajectory,
        run_dir: Path, device: torch.device,
    ) -> None:
        """Add the ablation rows to ``output``: ``inpaint``, ``prior`` (no LoRAs) and ``temporal`` (own fit)."""
        from lightning.pytorch import seed_everything

        from recapture.adaptation.placement import placed
        from recapture.anchor.inpaint import inpaint_telea
        from recapture.io import write_video
        from recapture.sampling import generate

        frames = anchor.anchor.frames
        t0 = time.perf_counter()
        output.ablation["inpaint"] = inpaint_telea(frames, anchor.anchor.mask)
        output.timings["inpaint_s"] = time.perf_counter() - t0
        # the prior without fine-tuning: the same sampling (settings, seed) with every LoRA off
        seed_everything(self.settings.seed, workers=True, verbose=False)
        t0 = time.perf_counter()
        with placed([module.components.unet], device):
            prior = generate(module.components, frames[0], frames.shape[0], module.sampling, anchor=frames,
                             adapters=()).frames.cpu()
        output.ablation["prior"] = prior
        output.timings["prior_s"] = time.perf_counter() - t0
        folder = run_dir / "ablation"
        write_video(folder / "inpaint.mp4", output.ablation["inpaint"], sample.fps)
        write_video(folder / "prior.mp4", prior, sample.fps)
        # "+ temporal LoRA": a fit of its own with spatial steps off (same max_steps), no refinement
        temporal_cfg = cfg.clone()
        temporal_cfg.model.schedule.spatial = 0
        loggers, self._loggers = self._loggers, []
        try:
            t_module, _, _, t_fit = self._fit(temporal_cfg, sample, trajectory, folder / "temporal", device,
                                              refine=False)
        finally:
            self._loggers = loggers
        generated = t_module.result.generated
        if generated is None:
            raise RecaptureError(f"{sample.scene_id}: the temporal-only ablation fit generated no video")
        output.ablation["temporal"] = generated.cpu()
        output.timings["temporal_fit_s"] = t_fit
        output.info["ablation_dir"] = str(folder)
        del t_module

    def finish(self, metrics: dict[str, float] | None) -> None:
        """Log the scene's ``eval/...`` metrics to its loggers and close them (W&B: finish the run)."""
        loggers, self._loggers = self._loggers, []
        with _as_rank_zero():
            for lg in loggers:
                if metrics:
                    lg.log_metrics(metrics, step=self._step)
                lg.finalize("success" if metrics is not None else "failed")
            _finish_wandb(loggers)

    def log_summary(self, metrics: dict[str, float], table: list[dict[str, Any]]) -> None:
        """Log the aggregate to a ``<group>-summary`` run (the agent's run under a W&B sweep)."""
        from lightning.pytorch.loggers import WandbLogger

        with _as_rank_zero():
            loggers = self.make_loggers(f"{self.group}-summary", "summary", summary=True)
            columns = ["method", *METRICS]
            for lg in loggers:
                lg.log_metrics(metrics, step=0)
                if isinstance(lg, WandbLogger):
                    lg.log_table(key="eval/table", columns=columns, data=[[row.get(c) for c in columns] for row in table])
                lg.finalize("success")
            _finish_wandb(loggers)


def save_config(parser: Any, config: Any, path: Path) -> Path:
    """Write the resolved ``recapture benchmark`` config (atomically)."""
    with atomic_path(path) as tmp:
        parser.save(config, str(tmp), skip_none=False, overwrite=True, multifile=False)
    return path


def _resolve_scene_models(parser: Any, config: Any, settings: BenchmarkSettings) -> dict[str, str] | None:
    """Find the SVD weights (and the depth model when ``depth_source: model``) every scene will need.

    Returns:
        the fingerprints (:func:`~recapture.hub.weights_fingerprint`) of the SVD weights (``svd``;
        not for the tiny random set, whose seed is in ``model:``) and of the depth model (``depth``),
        None when there are neither.
    """
    from recapture.adaptation import resolve_components
    from recapture.hub import weights_fingerprint

    init = parser.instantiate_classes(config.clone())
    folders: dict[str, Path] = {}
    if settings.depth_source == "model" and (depth := init.data.depth.resolve_weights()) is not None:
        folders["depth"] = depth
    components = init.model.components_config
    if not components.tiny:
        folders["svd"] = resolve_components(components)
    if not folders:
        return None
    t0 = time.perf_counter()
    fingerprints = {name: weights_fingerprint(folder) for name, folder in folders.items()}
    log.info("model weights fingerprinted in %.1f s (part of the settings key): %s", time.perf_counter() - t0,
             ", ".join(f"{name} {folders[name]} {fp}" for name, fp in fingerprints.items()))
    return fingerprints


def run_benchmark(trainer: Any, settings: BenchmarkSettings) -> dict[str, Any] | None:
    """The body of ``ReCaptureTrainer.benchmark``: run this rank's scenes, then (rank 0) aggregate.

    Args:
        trainer: the trainer ``ReCaptureCLI`` built (a template; its ``benchmark_source`` holds the
            parser and parsed config).
        settings: the ``kubric:`` settings.

    Returns:
        The aggregate on rank 0 (``results.json``'s content, also kept in ``trainer.command_result``),
        ``None`` on other ranks.
    """
    from lightning.pytorch.accelerators import CPUAccelerator

    source = trainer.benchmark_source
    if source is None:
        raise RecaptureError(
            "trainer.benchmark needs the parsed config: run `recapture benchmark --config ...`; from Python, call "
            "recapture.benchmark.sweep.run_sweep(settings, runner) with your own SceneRunner"
        )
    parser, config = source.parser, source.config
    weights = _resolve_scene_models(parser, config, settings)  # before any scene: a missing model stops at once
    dist = dist_info()
    group = settings.wandb_group or Path(settings.output).name
    runner = LightningSceneRunner(parser, config, type(trainer), settings, group, weights)
    if dist.rank == 0 and not settings.aggregate_only:
        save_config(parser, config, output_dir(settings) / "config.yaml")
    device = torch.device("cpu") if isinstance(trainer.accelerator, CPUAccelerator) else None
    summary = run_sweep(settings, runner, dist, device=device)
    trainer.command_result = summary  # cli_main returns the LightningCLI; its trainer keeps the result
    return summary
