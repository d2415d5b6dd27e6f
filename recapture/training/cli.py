"""LightningCLI wiring for the Lightning family of ``recapture`` subcommands.

``fit``/``validate``/``test``/``predict`` are Lightning's; ``anchor`` and ``generate`` are methods of
:class:`ReCaptureTrainer`, so they read the same ``model:``/``data:``/``trainer:`` YAML sections
(``recapture anchor --config configs/orbit.yaml --data.video clip.mp4 --output out/``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from recapture.data.kubric.sweep import BenchmarkSettings
from recapture.utils import RecaptureError

log = logging.getLogger("recapture")

_EXTRA: dict[str, str] = {
    "anchor": "Render the anchor video, validity mask, preview and report for a trajectory (stage 1).",
    "generate": "Generate and SDEdit-refine from saved LoRAs and the cached anchor, without training.",
    "benchmark": "Score ReCapture on Kubric-4D (GCD protocol): a fresh fine-tuning run per scene, sharded over ranks.",
}


def extra_subcommands() -> dict[str, str]:
    """Extra Lightning subcommands and their one-line descriptions."""
    return dict(_EXTRA)


class ReCaptureTrainer(Trainer):
    """Lightning ``Trainer`` with recapture's extra subcommands.

    The files a subcommand wrote are kept in ``trainer.command_result`` (``cli_main`` returns the
    LightningCLI object, whose ``trainer`` this is).
    """

    command_result: dict[str, Path] | None = None

    def anchor(self, model: LightningModule, datamodule: Any, output: Path | None = None) -> dict[str, Path]:
        """Render the anchor video, validity mask, preview and report for a trajectory (stage 1).

        Args:
            model: unused (the anchor needs no diffusion model).
            datamodule: the data module holding the video, depth and trajectory settings.
            output: output folder; default ``trainer.default_root_dir``. Receives ``anchor.mp4``,
                ``mask.mp4``, ``preview.mp4``, ``trajectory.json`` and ``report.json``.
        """
        from recapture.anchor import write_anchor_outputs

        out = Path(output) if output is not None else Path(self.default_root_dir)
        result = datamodule.build_anchor(device=self.strategy.root_device)
        files = write_anchor_outputs(result, out)
        report = result.report
        self.command_result = files
        print(
            f"anchor: {report['num_frames']} frames {report['width']}x{report['height']}, coverage mean "
            f"{report['coverage_mean']:.1%} (min {report['coverage_min']:.1%}), depth {report['depth_source']} -> {out}"
        )
        return files

    def generate(
        self,
        model: LightningModule,
        datamodule: Any,
        lora_dir: Path | None = None,
        output: Path | None = None,
        seed: int | None = None,
        refine_strength: float | None = None,
    ) -> dict[str, Path]:
        """Generate and SDEdit-refine from saved LoRAs and the cached anchor, without training.

        Args:
            model: the module (its ``components``, ``lora``, ``sampling`` and ``refine`` settings are used).
            datamodule: the data module (video and trajectory settings select the cached anchor).
            lora_dir: folder with ``spatial/`` and ``temporal/`` LoRAs; default ``<default_root_dir>/lora``.
            output: output folder; default ``<default_root_dir>/generate_seed<seed>``.
            seed: sampling seed (default ``model.sampling.seed``); the refinement uses it too.
            refine_strength: SDEdit strength (default ``model.refine.strength``; 0 skips refinement).
        """
        from dataclasses import replace

        from recapture.adaptation import load_lora
        from recapture.io import frames_digest, write_video
        from recapture.training.callbacks import generate_video, refine_video, write_refined
        from recapture.utils import write_json

        root = Path(self.default_root_dir)
        lora_dir = Path(lora_dir) if lora_dir is not None else root / "lora"
        sampling = model.sampling if seed is None else replace(model.sampling, seed=seed)
        refine = replace(model.refine, seed=sampling.seed)
        if refine_strength is not None:
            refine = replace(refine, strength=refine_strength)
        out = Path(output) if output is not None else root / f"generate_seed{sampling.seed}"
        device = self.strategy.root_device  # the device the user chose (--trainer.accelerator/devices)
        components = model.load_parts(device=device, precision=str(self.precision))
        for name in ("spatial", "temporal"):
            load_lora(model.unet, name, lora_dir / name)
        anchor = datamodule.build_anchor(device=device)
        model.eval()
        with torch.no_grad(), components.placed(device, ("unet",)):
            generated, t_gen = generate_video(components, anchor, sampling)
            refined, t_ref = refine_video(components, generated, anchor, refine)
        files = {"generated": write_video(out / "generated.mp4", generated, datamodule.fps)}
        files.update(write_refined(out, anchor, refined, datamodule.fps))
        report = {
            "seed": sampling.seed,
            "refine_strength": refine.strength,
            "lora_dir": str(lora_dir),
            "timings_s": {"generate_s": t_gen, "refine_s": t_ref},
            "frames_sha256": {"generated": frames_digest(generated), "refined": frames_digest(refined)},
            "files": {k: str(v) for k, v in files.items()},
        }
        files["report"] = write_json(out / "report.json", report)
        self.command_result = files
        print(f"generate: {t_gen:.1f} s, refine: {t_ref:.1f} s (seed {sampling.seed}, strength {refine.strength}) -> {out}")
        return files

    def benchmark(
        self, model: LightningModule, datamodule: Any, kubric: BenchmarkSettings = BenchmarkSettings()
    ) -> dict[str, Any] | None:
        """Score ReCapture on Kubric-4D (GCD protocol): a fresh fine-tuning run per scene, sharded over ranks.

        Args:
            model: template only: every scene gets a fresh module built from the same ``model:`` config.
            datamodule: template only: every scene gets a fresh data module from the same ``data:`` config.
            kubric: scenes, controls, mode, resolution, output folder, depth source, baselines, W&B
                group, ... (see :class:`recapture.data.kubric.sweep.BenchmarkSettings`).
        """
        from recapture.training.benchmark import run_benchmark

        return run_benchmark(self, kubric)


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config as ``<default_root_dir>/config.yaml`` and log it to the loggers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from recapture.utils import atomic_path

        path = Path(trainer.default_root_dir) / self.config_filename
        with atomic_path(path) as tmp:
            self.parser.save(self.config, str(tmp), skip_none=False, overwrite=True, multifile=False)
        for lg in trainer.loggers:
            lg.log_hyperparams(self.config.as_dict())


class ReCaptureCLI(LightningCLI):
    """LightningCLI over :class:`ReCaptureModule` / :class:`ReCaptureDataModule` / :class:`ReCaptureTrainer`."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        commands["anchor"] = {"model", "datamodule"}
        commands["generate"] = {"model", "datamodule"}
        commands["benchmark"] = {"model", "datamodule"}
        return commands

    def before_instantiate_classes(self) -> None:
        ensure_wandb_mode()

    def before_anchor(self) -> None:
        resolve_models(self.model, self.datamodule, svd=False)

    def before_generate(self) -> None:
        resolve_models(self.model, self.datamodule)

    def before_benchmark(self) -> None:
        # the benchmark builds a fresh module, data module and trainer per scene from this parsed config
        self.trainer.benchmark_source = (self._parser(self.subcommand), self.config[self.subcommand])

    def before_fit(self) -> None:
        resolve_models(self.model, self.datamodule)
        # end-of-fit callbacks must run in pipeline order whatever their order in the YAML
        self.trainer.callbacks.sort(key=lambda cb: getattr(cb, "order", 0))
        place_checkpoints(self.trainer)

    def after_fit(self) -> None:
        root = Path(self.trainer.default_root_dir)
        print(f"recapture: outputs in {root} (refined.mp4, comparison.mp4, report.json, lora/)")


def resolve_models(model: Any, datamodule: Any, svd: bool = True) -> None:
    """Find every model the run needs before any heavy work (local directory, hub cache or download).

    A missing model stops the command at once with one line naming it and how to get it
    (:mod:`recapture.hub`), instead of failing after the anchor has been rendered.

    Args:
        model: the :class:`~recapture.training.module.ReCaptureModule` (its SVD weights).
        datamodule: the :class:`~recapture.training.datamodule.ReCaptureDataModule` (its depth model).
        svd: also resolve the SVD weights (not needed by ``anchor``).
    """
    from recapture.adaptation import resolve_components
    from recapture.depth.transformers_backend import resolve_depth_model

    if datamodule is not None and datamodule.needs_depth_model():
        resolve_depth_model(datamodule.depth.model)
    if svd and model is not None and not model.components_config.tiny:
        resolve_components(model.components_config)


def place_checkpoints(trainer: Trainer) -> None:
    """Checkpoints without an explicit ``dirpath`` go to ``<default_root_dir>/checkpoints`` with ``last.ckpt``.

    (Lightning would otherwise put them under the logger's folder, e.g. ``./<wandb project>/<id>/``.)
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint):
            if cb.dirpath is None:
                cb.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
            if cb.save_last is None:
                cb.save_last = True


def finish_wandb(failed: bool = False) -> None:
    """Close the process's W&B run (if any), so that the next command in this process starts its own.

    Runs after every Lightning command, also when it fails or is interrupted (Lightning itself
    leaves the run open, and a later ``WandbLogger`` would silently reuse it).
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def ensure_wandb_mode() -> str:
    """Run W&B offline when no credentials are configured, and say how to sync later.

    Returns the mode in force (``online``/``offline``/whatever ``WANDB_MODE`` says).
    """
    import os

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    log.warning(
        "W&B: no credentials found (WANDB_API_KEY or `wandb login`), logging offline to ./wandb. "
        "Upload later with `wandb sync wandb/offline-run-*`, or use --config configs/loggers/csv.yaml."
    )
    return "offline"


def _netrc_has_wandb() -> bool:
    import netrc
    import os

    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return auth is not None


def run_lightning(args: Sequence[str] | None) -> Any:
    """Run a Lightning subcommand (``fit``, ``anchor``, ...) with ``args`` (None: ``sys.argv``)."""
    from recapture.training.datamodule import ReCaptureDataModule
    from recapture.training.module import ReCaptureModule

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return ReCaptureCLI(
            ReCaptureModule,
            ReCaptureDataModule,
            trainer_class=ReCaptureTrainer,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            args=None if args is None else list(args),
        )
    except RecaptureError as err:
        finish_wandb(failed=True)
        if args is not None:  # in-process callers (tests, notebooks) get the exception
            raise
        print(f"recapture: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except BaseException:
        finish_wandb(failed=True)
        raise
    finally:
        finish_wandb()

