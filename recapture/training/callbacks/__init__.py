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

Modules: :mod:`~recapture.training.callbacks.base` (the pipeline order and what the callbacks
share), :mod:`~recapture.training.callbacks.generation` (``ExportLoRA``, ``GenerateVideo``,
``SDEditRefine``), :mod:`~recapture.training.callbacks.reporting` (``LogVideos``,
``MetricsCallback``, ``RunReport``) and :mod:`~recapture.training.callbacks.progress`
(``StepTimer``, ``StepProgress``). Every name is importable from here, and configs name the
callbacks here: ``class_path: recapture.training.callbacks.GenerateVideo``.
"""

from recapture.training.callbacks.base import _Ordered as _Ordered
from recapture.training.callbacks.base import pipeline_order, run_dir
from recapture.training.callbacks.generation import (
    ExportLoRA,
    GenerateVideo,
    SDEditRefine,
    generate_video,
    refine_video,
    write_refined,
)
from recapture.training.callbacks.progress import StepProgress, StepTimer
from recapture.training.callbacks.reporting import LogVideos, MetricsCallback, RunReport, frame_strip

__all__ = [
    "ExportLoRA",
    "GenerateVideo",
    "LogVideos",
    "MetricsCallback",
    "RunReport",
    "SDEditRefine",
    "StepProgress",
    "StepTimer",
    "frame_strip",
    "generate_video",
    "pipeline_order",
    "refine_video",
    "run_dir",
    "write_refined",
]
