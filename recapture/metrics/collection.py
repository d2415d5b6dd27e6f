"""Metric names, :class:`MetricModels` and :func:`compute_metrics`, the one call used by ``evaluate`` and callbacks.

The metrics and their models are registered where they are defined (see
:mod:`recapture.metrics.registry`); this module derives the names from that table:

* image, need a target: ``psnr``, ``ssim``, ``lpips``; over the mask only (needs a mask):
  ``psnr_masked``, ``ssim_masked``, ``lpips_masked``. When a mask is given, the masked variants of
  the requested image metrics are added automatically.
* VBench, prediction only, in percent: ``subject_consistency``, ``background_consistency``,
  ``temporal_flickering``, ``motion_smoothness``, ``dynamic_degree``, ``aesthetic_quality``,
  ``imaging_quality``, ``object_class``; the alias ``vbench`` means the first seven.
* camera, need estimated and requested poses: ``rot_err``, ``trans_err``, ``cammc`` (alias ``camera``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

# the modules that register metrics and models (a new metric module joins this line)
from recapture.metrics import backbones, camera, image, lpips, vbench_metrics  # noqa: F401
from recapture.metrics.backbones import MetricWeights
from recapture.metrics.common import as_video_batch
from recapture.metrics.registry import MODELS, MetricSpec, aliases, metric_names, model_spec, spec_of
from recapture.utils import RecaptureError

METRIC_NAMES = metric_names()
ALIASES = aliases()

# what a missing input of MetricSet.update means, in the words of the command line
_MISSING = {
    "target": "{names} compare with a target video: pass one (--target)",
    "mask": "masked metrics need a mask (--mask); white pixels (> 0.5) are the ones scored",
    "pred_c2w": "{names} need estimated and requested poses (--camera and --trajectory)",
    "target_c2w": "{names} need estimated and requested poses (--camera and --trajectory)",
}


class MetricModels:
    """Loads each metric model once, on first use; build one and reuse it across videos.

    Args:
        weights: where the models come from.
        **prebuilt: ready models by key (see ``registry.MODELS``: ``lpips``, ``dino``, ``clip``,
            ``aesthetic``, ``musiq``, ``grit``, ``interpolator``, ``flow``), e.g. tiny random
            backbones in tests.
    """

    def __init__(self, weights: MetricWeights | None = None, **prebuilt: Any) -> None:
        unknown = set(prebuilt) - set(MODELS)
        if unknown:
            raise RecaptureError(f"unknown metric model(s) {sorted(unknown)}; known: {list(MODELS)}")
        self.weights = weights or MetricWeights()
        self._cache: dict[str, Any] = dict(prebuilt)

    def get(self, key: str) -> Any:
        """The model for ``key``, loaded on first call."""
        if key not in self._cache:
            self._cache[key] = model_spec(key).load(self.weights)
        return self._cache[key]

    def unset(self, key: str) -> list[str]:
        """The ``MetricWeights`` fields of model ``key`` that are ``None`` (e.g. to skip a metric)."""
        return [f for f in model_spec(key).fields if getattr(self.weights, f) is None]


def parse_metric_names(metrics: str | Sequence[str], with_mask: bool = False) -> list[str]:
    """Validate metric names (comma-separated string or list), expand aliases, add masked variants.

    Args:
        metrics: e.g. ``"psnr,ssim,lpips"`` or ``["psnr", "vbench"]``.
        with_mask: add ``<name>_masked`` for each requested metric that has a masked variant.

    Returns:
        unique names in request order.
    """
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    valid, groups = metric_names(), aliases()
    names: list[str] = []
    for raw in items:
        name = str(raw).strip().lower()
        if not name:
            continue
        for n in groups.get(name, (name,)):
            if n not in valid:
                raise RecaptureError(
                    f"unknown metric {raw!r}; valid names: {', '.join(valid)} (aliases: {', '.join(groups)})"
                )
            names.append(n)
            masked = spec_of(n).masked
            if with_mask and masked is not None:
                names.append(masked)
    if not names:
        raise RecaptureError(f"no metric requested; choose from {', '.join(valid)}")
    return list(dict.fromkeys(names))


def _as_poses(c2w: Tensor | None) -> Tensor | None:
    return None if c2w is None else torch.as_tensor(c2w).double()


class MetricSet:
    """A group of metrics updated together, over one or many videos.

    Args:
        metrics: names or aliases (see ``METRIC_NAMES``), list or comma-separated string.
        models: where the models come from (loaded on first use).
        with_mask: add the masked variants of the requested image metrics.
        fps: default frame rate (``dynamic_degree``).
        object_class: COCO class for ``object_class``.
    """

    def __init__(
        self,
        metrics: str | Sequence[str],
        models: MetricModels | None = None,
        with_mask: bool = False,
        fps: float | None = None,
        object_class: str | None = None,
    ) -> None:
        self.names = parse_metric_names(metrics, with_mask=with_mask)
        models = models or MetricModels()
        options = {"fps": fps, "object_class": object_class}
        # one metric object per spec (the camera metric gives rot_err, trans_err and cammc), keyed by its first name
        self._specs: dict[str, MetricSpec] = {}
        for name in self.names:
            spec = spec_of(name)
            self._specs.setdefault(spec.outputs[0], spec)
        self.metrics = {key: spec.build(models.get, options) for key, spec in self._specs.items()}

    @property
    def inputs(self) -> set[str]:
        """What :meth:`update` needs for these metrics (names from ``registry.INPUTS``)."""
        return {i for spec in self._specs.values() for i in spec.inputs}

    def update(
        self,
        pred: Tensor,
        target: Tensor | None = None,
        mask: Tensor | None = None,
        fps: float | None = None,
        pred_c2w: Tensor | None = None,
        target_c2w: Tensor | None = None,
    ) -> None:
        """Add videos; arguments as in :func:`compute_metrics`."""
        given = {"pred": as_video_batch(pred, "pred"), "target": target, "mask": mask, "fps": fps,
                 "pred_c2w": _as_poses(pred_c2w), "target_c2w": _as_poses(target_c2w)}  # fmt: skip
        for what, message in _MISSING.items():
            needing = [n for n in self.names if what in spec_of(n).inputs]
            if needing and given[what] is None:
                raise RecaptureError(message.format(names=", ".join(needing)))
        for key, metric in self.metrics.items():
            metric.update(*(given[i] for i in self._specs[key].inputs))

    def compute(self) -> dict[str, float]:
        """``{name: value}`` in request order (NaN where no video had a value)."""
        values: dict[str, float] = {}
        for key, metric in self.metrics.items():
            out = metric.compute()
            several = len(self._specs[key].outputs) > 1  # compute() gives {name: value}
            values.update({k: float(v) for k, v in (out.items() if several else [(key, out)])})
        return {n: values[n] for n in self.names}

    def merge(self, other: MetricSet) -> None:
        """Add another set's accumulated states (same names) to this one."""
        for key, metric in self.metrics.items():
            metric.merge_state(other.metrics[key])

    def reset(self) -> None:
        """Forget all videos."""
        for metric in self.metrics.values():
            metric.reset()


def compute_metrics(
    pred: Tensor,
    target: Tensor | None = None,
    mask: Tensor | None = None,
    metrics: str | Sequence[str] = ("psnr", "ssim"),
    fps: float | None = None,
    weights: MetricWeights | None = None,
    *,
    models: MetricModels | None = None,
    pred_c2w: Tensor | None = None,
    target_c2w: Tensor | None = None,
    object_class: str | None = None,
) -> dict[str, float]:
    """Compute the requested metrics of a prediction (mean over videos if a batch is given).

    Args:
        pred: ``(T, 3, H, W)`` or ``(B, T, 3, H, W)`` in [0, 1].
        target: same shape; needed by the image metrics.
        mask: ``(T, 1, H, W)`` or ``(B, T, 1, H, W)``, white (> 0.5) = pixels the masked metrics
            use (e.g. the occluded region); adds ``<name>_masked`` for each image metric requested.
        metrics: names from ``METRIC_NAMES`` (or aliases), a list or a comma-separated string.
        fps: frame rate of the prediction (needed by ``dynamic_degree``).
        weights: where to load models from (ignored when ``models`` is given).
        models: a :class:`MetricModels` to reuse across calls (models load once).
        pred_c2w: ``(N, 4, 4)`` poses estimated from the prediction (camera metrics).
        target_c2w: ``(N, 4, 4)`` requested trajectory (camera metrics).
        object_class: COCO class for ``object_class``.

    Returns:
        ``{name: value}``: PSNR in dB, SSIM and LPIPS raw, VBench dimensions in percent, camera
        errors summed over frames (radians for ``rot_err``).
    """
    group = MetricSet(metrics, models or MetricModels(weights), mask is not None, fps, object_class)
    group.update(pred, target, mask, fps, pred_c2w, target_c2w)
    return group.compute()
