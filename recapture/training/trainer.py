"""The Lightning classes the CLIs wire in: :class:`ReCaptureTrainer` and the config saver.

``anchor``, ``generate`` and ``benchmark`` are methods of :class:`ReCaptureTrainer`, so they read
the same ``model:``/``data:``/``trainer:`` YAML sections as ``fit``
(:class:`~recapture.training.cli.ReCaptureCLI` adds them as subcommands).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from recapture.benchmark.sweep import BenchmarkSettings
from recapture.utils import check_output_folder


@dataclass(frozen=True)
class BenchmarkSource:
    """What ``recapture benchmark`` re-instantiates per scene: the subcommand's parser and parsed config."""

    parser: Any
    config: Any


class ReCaptureTrainer(Trainer):
    """Lightning ``Trainer`` with recapture's extra subcommands.

    The files a subcommand wrote are kept in ``trainer.command_result`` (``cli_main`` returns the
    LightningCLI object, whose ``trainer`` this is).
    """

    command_result: dict[str, Path] | None = None
    # ``benchmark`` builds a fresh run per scene from the parsed config: ReCaptureCLI sets this before
    # running it (the subcommand parser and the parsed, not instantiated, config)
    benchmark_source: BenchmarkSource | None = None

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
        check_output_folder(out, "--output" if output is not None else "--trainer.default_root_dir")  # before the work
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
        check_output_folder(out, "--output" if output is not None else "--trainer.default_root_dir")  # before the work
        device = self.strategy.root_device  # the device the user chose (--trainer.accelerator/devices)
        components = model.load_parts(device=device, precision=str(self.precision))
        for name in ("spatial", "temporal"):
            load_lora(model.unet, name, lora_dir / name)
        anchor = datamodule.build_anchor(device=device)
        model.eval()
        with torch.no_grad(), components.placed(device, ("unet",)):
            generated, t_gen = generate_video(components, anchor, sampling)
            refined, t_ref = refine_video(components, generated, anchor, refine)
        files = {"generated": write_video(out / "generated.mp4", generated, datamodule.video_fps)}
        files.update(write_refined(out, anchor, refined, datamodule.video_fps))
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
                group, ... (see :class:`recapture.benchmark.sweep.BenchmarkSettings`).
        """
        from recapture.training.scene_runner import run_benchmark

        return run_benchmark(self, kubric)



class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config as ``<default_root_dir>/config.yaml`` and log it to the loggers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from recapture.utils import atomic_path

        path = Path(trainer.default_root_dir) / self.config_filename
        config = self.config
        if config.get("overwrite"):  # rerunning the saved config must not delete a run by itself
            config = config.clone()
            config.overwrite = False
        with atomic_path(path) as tmp:
            self.parser.save(config, str(tmp), skip_none=False, overwrite=True, multifile=False)
        for lg in trainer.loggers:
            lg.log_hyperparams(self.config.as_dict())

