"""What a fine-tuning run produces, declared: the object the output callbacks fill and readers use.

:class:`RunResult` lives on the module (``ReCaptureModule.result``, reset at the start of every
fit). The output callbacks (:mod:`recapture.training.callbacks`) write into it in pipeline order,
and whoever ran the fit reads it afterwards (``recapture benchmark``'s scene runner, notebooks)::

    trainer.fit(module, datamodule)
    module.result.refined          # (T, 3, H, W) in [0, 1], or None without SDEditRefine
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """Outputs of one fit, filled by the output callbacks.

    Attributes:
        generated: ``(T, 3, H, W)`` video sampled with both LoRAs (``GenerateVideo``), CPU.
        refined: ``(T, 3, H, W)`` the SDEdit-refined video (``SDEditRefine``), CPU.
        metrics: scores of the final video (``MetricsCallback``).
        timings: seconds per stage (``train_s``, ``generate_s``, ``refine_s``, step medians, ...).
        files: written outputs by name (``generated``, ``refined``, ``lora_spatial``, ...) -> path.
    """

    generated: torch.Tensor | None = None
    refined: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def videos(self) -> dict[str, torch.Tensor]:
        """The videos produced so far, in pipeline order (``generated``, ``refined``)."""
        return {k: v for k, v in (("generated", self.generated), ("refined", self.refined)) if v is not None}
