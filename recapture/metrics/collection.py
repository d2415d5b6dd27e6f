"""Metric names, weight locations and :func:`compute_metrics`, the one call used by ``evaluate`` and callbacks.

Names (``METRIC_NAMES``):

* image, need a target: ``psnr``, ``ssim``, ``lpips``; over the mask only (needs a mask):
  ``psnr_masked``, ``ssim_masked``, ``lpips_masked``. When a mask is given, the masked variants of
  the requested image metrics are added automatically.
* VBench, prediction only, in percent: ``subject_consistency``, ``background_consistency``,
  ``temporal_flickering``, ``motion_smoothness``, ``dynamic_degree``, ``aesthetic_quality``,
  ``imaging_quality``, ``object_class``; the alias ``vbench`` means the first seven.
* camera, need estimated and requested poses: ``rot_err``, ``trans_err``, ``cammc`` (alias ``camera``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recapture.metrics import backbones, vbench, vbench_metrics
from recapture.metrics.camera import CAMERA_KEYS, CameraAccuracy
from recapture.metrics.common import as_video_batch
from recapture.metrics.image import VideoPSNR, VideoSSIM
from recapture.metrics.lpips import VideoLPIPS, load_lpips
from recapture.utils import RecaptureError

IMAGE_METRICS = ("psnr", "ssim", "lpips")
MASKED_METRICS = tuple(f"{m}_masked" for m in IMAGE_METRICS)
VBENCH_NAMES = tuple(vbench_metrics.VBENCH_METRICS)
CAMERA_NAMES = CAMERA_KEYS
METRIC_NAMES = IMAGE_METRICS + MASKED_METRICS + VBENCH_NAMES + CAMERA_NAMES
ALIASES = {"vbench": VBENCH_NAMES[:-1], "camera": CAMERA_NAMES}

# Which loaded model each metric needs (see MetricModels).
_MODEL_OF = {
    "lpips": "lpips",
    "lpips_masked": "lpips",
    "subject_consistency": "dino",
    "background_consistency": "clip",
    "motion_smoothness": "interpolator",
    "dynamic_degree": "flow",
    "aesthetic_quality": "aesthetic",
    "imaging_quality": "musiq",
    "object_class": "grit",
}


@dataclass
class MetricWeights:
    """Where the metric models come from (local files, local ``transformers`` folders or hub ids).

    Args:
        lpips_alexnet: torchvision's AlexNet state dict (``alexnet-owt-7be5be79.pth``).
        lpips_lin: the lpips package's ``weights/v0.1/alex.pth``.
        dino: DINO ViT-B/16 (``facebook/dino-vitb16`` or a local folder).
        clip: CLIP ViT-B/32 (``openai/clip-vit-base-patch32`` or a local folder).
        aesthetic_clip: CLIP ViT-L/14 (``openai/clip-vit-large-patch14`` or a local folder).
        aesthetic_head: LAION's ``sa_0_4_vit_l_14_linear.pth``.
        musiq: ``musiq_spaq_ckpt-358bb6af.pth`` (None: pyiqa downloads it).
        grit: ``grit_b_densecap_objectdet.pth`` (object class; needs the vbench package).
        interpolator: ``"module:factory"`` returning a frame interpolator (AMT-S wrapper).
        flow: ``"module:factory"`` returning an optical-flow callable (RAFT wrapper).
        device: where the models run.
    """

    lpips_alexnet: Path | None = None
    lpips_lin: Path | None = None
    dino: str | None = backbones.DINO_HUB_ID
    clip: str | None = backbones.CLIP_B32_HUB_ID
    aesthetic_clip: str | None = backbones.CLIP_L14_HUB_ID
    aesthetic_head: Path | None = None
    musiq: Path | None = None
    grit: Path | None = None
    interpolator: str | None = None
    flow: str | None = None
    device: str = "cpu"


class MetricModels:
    """Loads each metric model once, on first use; build one and reuse it across videos.

    Args:
        weights: where the models come from.
        **prebuilt: ready models by key (``lpips``, ``dino``, ``clip``, ``aesthetic``, ``musiq``,
            ``grit``, ``interpolator``, ``flow``), e.g. tiny random backbones in tests.
    """

    KEYS = ("lpips", "dino", "clip", "aesthetic", "musiq", "grit", "interpolator", "flow")

    def __init__(self, weights: MetricWeights | None = None, **prebuilt: Any) -> None:
        unknown = set(prebuilt) - set(self.KEYS)
        if unknown:
            raise RecaptureError(f"unknown metric model(s) {sorted(unknown)}; known: {list(self.KEYS)}")
        self.weights = weights or MetricWeights()
        self._cache: dict[str, Any] = dict(prebuilt)

    def get(self, key: str) -> Any:
        """The model for ``key``, loaded on first call."""
        if key not in self._cache:
            self._cache[key] = self._load(key)
        return self._cache[key]

    def _load(self, key: str) -> Any:
        w, dev = self.weights, self.weights.device
        loaders: dict[str, Callable[[], Any]] = {
            "lpips": lambda: load_lpips(w.lpips_alexnet, w.lpips_lin, dev),
            "dino": lambda: backbones.load_dino(w.dino, dev),
            "clip": lambda: backbones.load_clip(w.clip, dev),
            "aesthetic": lambda: backbones.load_aesthetic(w.aesthetic_clip, w.aesthetic_head, dev),
            "musiq": lambda: backbones.load_musiq(w.musiq, dev),
            "grit": lambda: backbones.load_grit(w.grit, dev),
            "interpolator": lambda: backbones.load_callable(w.interpolator, "--interpolator"),
            "flow": lambda: backbones.load_callable(w.flow, "--flow"),
        }
        if key == "interpolator" and w.interpolator is None:
            raise RecaptureError(vbench.NO_INTERPOLATOR)
        if key == "flow" and w.flow is None:
            raise RecaptureError(vbench.NO_FLOW)
        return loaders[key]()


def parse_metric_names(metrics: str | Sequence[str], with_mask: bool = False) -> list[str]:
    """Validate metric names (comma-separated string or list), expand aliases, add masked variants.

    Args:
        metrics: e.g. ``"psnr,ssim,lpips"`` or ``["psnr", "vbench"]``.
        with_mask: add ``<name>_masked`` for each requested image metric.

    Returns:
        unique names in request order.
    """
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names: list[str] = []
    for raw in items:
        name = str(raw).strip().lower()
        if not name:
            continue
        expanded = ALIASES.get(name, (name,))
        for n in expanded:
            if n not in METRIC_NAMES:
                raise RecaptureError(
                    f"unknown metric {raw!r}; valid names: {', '.join(METRIC_NAMES)} (aliases: {', '.join(ALIASES)})"
                )
            names.append(n)
            if with_mask and n in IMAGE_METRICS:
                names.append(f"{n}_masked")
    if not names:
        raise RecaptureError(f"no metric requested; choose from {', '.join(METRIC_NAMES)}")
    return list(dict.fromkeys(names))


def _build(name: str, models: MetricModels, fps: float | None, object_class: str | None) -> Any:
    base = name.removesuffix("_masked")
    if base == "psnr":
        return VideoPSNR()
    if base == "ssim":
        return VideoSSIM()
    if base == "lpips":
        return VideoLPIPS(models.get("lpips"))
    if name == "dynamic_degree":
        return vbench_metrics.DynamicDegree(models.get("flow"), fps=fps)
    if name == "object_class":
        return vbench_metrics.ObjectClass(models.get("grit"), class_name=object_class)
    if name == "temporal_flickering":
        return vbench_metrics.TemporalFlickering()
    return vbench_metrics.VBENCH_METRICS[name](models.get(_MODEL_OF[name]))


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
        self.metrics = {n: _build(n, models, fps, object_class) for n in self.names if n not in CAMERA_NAMES}
        self.camera = CameraAccuracy() if any(n in CAMERA_NAMES for n in self.names) else None

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
        p = as_video_batch(pred, "pred")
        needs_target = [n for n in self.names if n.removesuffix("_masked") in IMAGE_METRICS]
        if needs_target and target is None:
            raise RecaptureError(
                f"{', '.join(needs_target)} compare with a target video: pass one (--target)"
            )
        if any(n in MASKED_METRICS for n in self.names) and mask is None:
            raise RecaptureError(
                "masked metrics need a mask (--mask); white pixels (> 0.5) are the ones scored"
            )
        for name, metric in self.metrics.items():
            if name in IMAGE_METRICS:
                metric.update(p, target)
            elif name in MASKED_METRICS:
                metric.update(p, target, mask)
            elif name == "dynamic_degree":
                metric.update(p, fps=fps)
            else:
                metric.update(p)
        if self.camera is not None:
            if pred_c2w is None or target_c2w is None:
                cam = [n for n in self.names if n in CAMERA_NAMES]
                raise RecaptureError(
                    f"{', '.join(cam)} need estimated and requested poses (--camera and --trajectory)"
                )
            self.camera.update(torch.as_tensor(pred_c2w).double(), torch.as_tensor(target_c2w).double())

    def compute(self) -> dict[str, float]:
        """``{name: value}`` in request order (NaN where no video had a value)."""
        values = {n: float(m.compute()) for n, m in self.metrics.items()}
        if self.camera is not None:
            values.update({k: float(v) for k, v in self.camera.compute().items()})
        return {n: values[n] for n in self.names}

    def merge(self, other: MetricSet) -> None:
        """Add another set's accumulated states (same names) to this one."""
        for name, metric in self.metrics.items():
            metric.merge_state(other.metrics[name])
        if self.camera is not None:
            self.camera.merge_state(other.camera)

    def reset(self) -> None:
        """Forget all videos."""
        for metric in self.metrics.values():
            metric.reset()
        if self.camera is not None:
            self.camera.reset()


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


def weights_from(**kwargs: Any) -> MetricWeights:
    """``MetricWeights`` from keyword arguments, ignoring ``None`` so that defaults stay."""
    known = {f.name for f in fields(MetricWeights)}
    return MetricWeights(**{k: v for k, v in kwargs.items() if k in known and v is not None})
