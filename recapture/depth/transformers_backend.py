"""Monocular depth with any ``transformers`` ``AutoModelForDepthEstimation`` (hub id or local dir).

Preprocessing is done in torch (no image processor, so nothing needs torchvision): resize so the
shorter side is ``input_size`` keeping the aspect ratio, round each side to a multiple of the
model's patch size (14 for DINOv2 backbones such as Depth Anything), normalise with the model's
``preprocessor_config.json`` mean/std when it ships one (else ImageNet statistics for Depth
Anything, 0.5/0.5 for DPT-style models), run in batches, and resize the prediction back to (H, W).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from recapture.depth.align import align_depth_scales, disparity_to_depth
from recapture.depth.base import DepthSource, check_depth, check_frames
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)

__all__ = [
    "TransformersDepth",
    "TransformersDepthSource",
    "is_metric_model",
    "resolve_depth_model",
    "write_random_depth_model",
]

DEPTH_HUB_PATTERNS = ["*.json", "*.safetensors"]
# the published configs of the default model, to build it with random weights (tests, benchmarks)
HUB_CONFIGS = Path(__file__).parent / "hub_configs"


def resolve_depth_model(model: str) -> Path:
    """The local directory of a ``transformers`` depth model (hub cache, local dir or download now).

    Raises:
        RecaptureError: one line naming the model and how to get it (or to use the prior backend).
    """
    from recapture.hub import resolve_model

    return resolve_model(model, "depth model", DEPTH_HUB_PATTERNS, required=("config.json",),
                         fix="or set data.depth.model to a local directory, or use --data.depth PriorDepthSource")


def write_random_depth_model(path: str | Path, config: str = "Depth-Anything-V2-Small-hf", seed: int = 0) -> Path:
    """Write a randomly initialised depth model of a published architecture in hub layout.

    Args:
        path: output directory (``config.json``, ``model.safetensors``, ``preprocessor_config.json``).
        config: a folder of :data:`HUB_CONFIGS` (default Depth Anything V2 Small, 24.8 M parameters).
        seed: seed of the random weights.

    Returns:
        ``path``, loadable as ``data.depth.model``.
    """
    import shutil

    from transformers import AutoConfig

    from recapture.utils import atomic_path

    source = HUB_CONFIGS / config
    path = Path(path)
    with atomic_path(path) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        from transformers import AutoModelForDepthEstimation

        model = AutoModelForDepthEstimation.from_config(AutoConfig.from_pretrained(source))
        model.save_pretrained(tmp)
        shutil.copy(source / "preprocessor_config.json", tmp / "preprocessor_config.json")
    return path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Model types whose output is metric depth whatever the config says.
METRIC_MODEL_TYPES = {"zoedepth", "depth_pro", "glpn"}
IMAGENET_MODEL_TYPES = {"depth_anything", "prompt_depth_anything", "glpn"}


def is_metric_model(model_config: Any) -> bool:
    """Whether a transformers depth model predicts metric depth (True) or relative disparity (False).

    ZoeDepth, Depth Pro and GLPN are metric; Depth Anything is metric when its config says
    ``depth_estimation_type="metric"``; DPT and the rest are treated as relative (inverse depth).
    """
    model_type = getattr(model_config, "model_type", "")
    if model_type in METRIC_MODEL_TYPES:
        return True
    return getattr(model_config, "depth_estimation_type", "relative") == "metric"


def _resolve_device_dtype(config: DepthSource, device: torch.device | str | None) -> tuple[torch.device, torch.dtype]:
    device = torch.device(config.device or device or "cpu")
    if config.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, config.dtype)
    return device, dtype


@dataclass
class TransformersDepthSource(DepthSource):
    """Monocular depth from any ``transformers`` ``AutoModelForDepthEstimation`` (hub id or local dir).

    Selected with ``--data.depth TransformersDepthSource`` (or ``class_path: TransformersDepthSource``
    under ``depth:``, as ``configs/orbit.yaml`` does). Uses every shared setting.

    Attributes:
        model: hub id or local directory.
        metric: whether the model predicts metric depth (ZoeDepth, Depth Pro, Depth Anything
            metric) rather than relative disparity; ``None`` detects it from the model config.
        input_size: the shorter image side fed to the model (rounded to a multiple of the patch
            size).
    """

    needs_weights: ClassVar[bool] = True

    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    metric: bool | None = None
    input_size: int = 518

    def build(self, fov_deg: float | None = None, device: torch.device | str | None = None) -> TransformersDepth:
        """The :class:`TransformersDepth` (the model loads at its first call; ``fov_deg`` is unused)."""
        return TransformersDepth(self, device=device)

    def resolve_weights(self) -> Path:
        """Find :attr:`model` (local directory, hub cache or a download now); see :func:`resolve_depth_model`."""
        return resolve_depth_model(self.model)


class TransformersDepth:
    """Depth from a transformers depth-estimation model, batched, fp16 on CUDA.

    Relative models (Depth Anything, DPT) predict disparity up to scale and shift: it is mapped to
    depth with ``config.disparity_mapping`` over the whole video and, unless ``config.align`` is
    False, aligned per frame to frame 0. Metric models give depth directly.

    Args:
        config: uses ``model``, ``metric``, ``input_size``, ``disparity_mapping``, ``align``,
            ``batch_size``, ``device``, ``dtype``, ``progress``.
        device: the run's device, used when ``config.device`` is not set (None: the CPU).
    """

    is_prior = False

    def __init__(self, config: TransformersDepthSource, device: torch.device | str | None = None) -> None:
        self.config = config
        self.device = device
        self.name = f"transformers:{config.model}"
        self._model: Any = None
        self._path: Path | None = None
        self._pre: dict[str, Any] = {}

    @property
    def cache_token(self) -> object:
        c = dataclasses.asdict(self.config)
        keys = ("model", "metric", "input_size", "disparity_mapping", "align", "dtype")
        return {k: c[k] for k in keys}

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        from transformers import AutoModelForDepthEstimation

        device, dtype = _resolve_device_dtype(self.config, self.device)
        self._path = resolve_depth_model(self.config.model)
        try:
            model = AutoModelForDepthEstimation.from_pretrained(self._path, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as err:
            raise RecaptureError(
                f"could not load the depth model {self.config.model!r} from {self._path} ({type(err).__name__}: "
                f"{err}); download it again or set data.depth.model to another directory; without weights use "
                "--data.depth PriorDepthSource"
            ) from err
        self._model = model.to(device).eval()
        self._pre = self._preprocessor_settings()
        log.info(
            "depth: loaded %s (%s, %s) on %s/%s",
            self.config.model,
            model.config.model_type,
            "metric" if self.metric else "relative",
            device,
            dtype,
        )
        return self._model

    def _preprocessor_settings(self) -> dict[str, Any]:
        pre: dict[str, Any] = {}
        try:
            from transformers.utils import cached_file

            path = cached_file(
                str(self._path), "preprocessor_config.json", _raise_exceptions_for_missing_entries=False
            )
            if path:
                with open(path) as f:
                    pre = json.load(f)
        except Exception as err:  # a missing processor file is normal for local tiny models
            log.debug("depth: no preprocessor_config.json for %s (%s)", self.config.model, err)
        mcfg = self._model.config
        imagenet = mcfg.model_type in IMAGENET_MODEL_TYPES
        patch = getattr(mcfg, "patch_size", None) or getattr(
            getattr(mcfg, "backbone_config", None), "patch_size", None
        )
        return {
            "mean": tuple(pre.get("image_mean", IMAGENET_MEAN if imagenet else (0.5, 0.5, 0.5))),
            "std": tuple(pre.get("image_std", IMAGENET_STD if imagenet else (0.5, 0.5, 0.5))),
            "multiple": int(pre.get("ensure_multiple_of", patch if isinstance(patch, int) else 32) or 1),
            "keep_aspect": bool(pre.get("keep_aspect_ratio", True)),
            "size": pre.get("size"),
        }

    @property
    def metric(self) -> bool:
        """Whether the model's output is metric depth (config override, else detected)."""
        if self.config.metric is not None:
            return self.config.metric
        return is_metric_model(self._load().config)

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) fed to the model for frames of size (height, width)."""
        self._load()
        m = self._pre["multiple"]
        size = self._pre["size"]
        if not self._pre["keep_aspect"] and isinstance(size, dict) and "height" in size:
            return int(size["height"]), int(size["width"])
        scale = self.config.input_size / min(height, width)
        return (max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m))

    @torch.inference_mode()
    def _predict(self, frames: Tensor) -> Tensor:
        model = self._load()
        param = next(model.parameters())
        t, _, h, w = frames.shape
        size = self.model_input_size(h, w)
        mean = torch.tensor(self._pre["mean"], device=param.device).view(1, 3, 1, 1)
        std = torch.tensor(self._pre["std"], device=param.device).view(1, 3, 1, 1)
        bs = max(1, self.config.batch_size)
        outs = []
        for start in tqdm(range(0, t, bs), desc="depth", unit="batch", disable=not self.config.progress):
            x = frames[start : start + bs].to(param.device, torch.float32)
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            x = ((x - mean) / std).to(param.dtype)
            pred = model(pixel_values=x).predicted_depth
            pred = pred.reshape(x.shape[0], 1, *pred.shape[-2:]).float()
            outs.append(F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False).cpu())
        return torch.cat(outs)

    def __call__(self, frames: Tensor) -> Tensor:
        """Estimate planar depth for a video.

        Args:
            frames: ``(T, 3, H, W)`` in [0, 1].

        Returns:
            planar depth ``(T, 1, H, W)`` (float32, on the frames' device).
        """
        check_frames(frames)
        raw = self._predict(frames)
        if not bool(torch.isfinite(raw).all()):
            bad = (~torch.isfinite(raw)).flatten(1).any(1).nonzero().flatten().tolist()
            raise RecaptureError(
                f"depth model {self.config.model!r} returned NaN/inf in frames {bad[:10]}; try dtype: float32"
            )
        if self.metric:
            depth = raw
            check_depth(depth, frames)
            align = bool(self.config.align)
        else:
            depth = disparity_to_depth(raw, self.config.disparity_mapping)
            align = self.config.align is None or self.config.align
        if align and depth.shape[0] > 1:
            depth = align_depth_scales(depth)
        check_depth(depth, frames)
        return depth.to(frames.device)
