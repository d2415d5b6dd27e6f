"""Output callbacks that make the videos: export the LoRAs, generate, SDEdit-refine (and their helpers).

:func:`generate_video`, :func:`refine_video` and :func:`write_refined` are also used by
``recapture generate`` (:meth:`recapture.training.trainer.ReCaptureTrainer.generate`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from recapture.training.callbacks.base import _log_video, _Ordered, _record_file, _results, run_dir
from recapture.utils import RecaptureError

log = logging.getLogger("recapture.training.callbacks")  # the name the logs have always shown


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

