"""Backbones for the VBench dimensions: VBench's preprocessing in torch plus loaders with clear errors.

Each backbone is a callable on frames ``(N, 3, H, W)`` float in [0, 1] (already quantised to 8
bits by the caller) that does its own resizing and normalisation, so any model with the same
interface can be swapped in (tests use tiny random ``transformers`` models built from config).

* :class:`DinoFeatures`: DINO ViT-B/16 CLS features (``transformers.ViTModel``; hub id
  ``facebook/dino-vitb16`` or a local copy). Shorter side to 224, bilinear, no crop, ImageNet norm.
* :class:`ClipImageFeatures`: CLIP image embeddings (``transformers.CLIPVisionModelWithProjection``;
  ``openai/clip-vit-base-patch32`` for background consistency, ``openai/clip-vit-large-patch14`` for
  aesthetic quality). Shorter side to 224 bicubic, centre crop 224, CLIP norm.
* :class:`AestheticScorer`: CLIP ViT-L/14 embedding, L2-normalised, through LAION's linear head
  (``sa_0_4_vit_l_14_linear.pth``, ``nn.Linear(768, 1)`` state dict).
* :func:`load_musiq`: MUSIQ-SPAQ through ``pyiqa`` and :func:`load_grit`: GRiT through ``vbench``;
  both need torchvision, so they live in the optional ``vbench`` extra.

Resizing follows torchvision's ``Resize`` on float tensors with ``antialias=False`` (VBench).
Known gap: for non-square frames ``transformers`` interpolates the ViT position embeddings slightly
differently from DINO's own hub code (which VBench loads), so subject consistency can differ from
VBench's in the last digits.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from recapture.metrics import vbench
from recapture.metrics.common import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop,
    normalize,
    resize_shorter_side,
)
from recapture.metrics.registry import register_model
from recapture.utils import RecaptureError

DINO_HUB_ID = "facebook/dino-vitb16"
CLIP_B32_HUB_ID = "openai/clip-vit-base-patch32"
CLIP_L14_HUB_ID = "openai/clip-vit-large-patch14"
AESTHETIC_HEAD_URL = (
    "https://github.com/LAION-AI/aesthetic-predictor/blob/main/sa_0_4_vit_l_14_linear.pth?raw=true"
)
MUSIQ_SPAQ_URL = (
    "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth"
)
GRIT_URL = "https://datarelease.blob.core.windows.net/grit/models/grit_b_densecap_objectdet.pth"
VBENCH_EXTRA = "pip install 'recapture[vbench]' (needs torchvision; GPU machines)"


def _model_dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class DinoFeatures(nn.Module):
    """CLS features of a ViT (DINO ViT-B/16 in VBench) after VBench's preprocessing.

    Args:
        model: a ``transformers.ViTModel`` (or any module called as ``model(pixel_values=...,
            interpolate_pos_encoding=True)`` returning ``last_hidden_state``).
        size: shorter side after resizing (224 in VBench).

    ``forward(frames)``: ``(N, 3, H, W)`` in [0, 1] -> ``(N, D)`` float32 CLS features.
    """

    def __init__(self, model: nn.Module, size: int = 224) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.size = size

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        x = resize_shorter_side(frames.float(), self.size, "bilinear")
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        x = x.to(_model_device(self.model), _model_dtype(self.model))
        out = self.model(pixel_values=x, interpolate_pos_encoding=True)
        return out.last_hidden_state[:, 0].float()


class ClipImageFeatures(nn.Module):
    """CLIP image embeddings after VBench's ``clip_transform`` (bicubic resize, centre crop, CLIP norm).

    Args:
        model: a ``transformers.CLIPVisionModelWithProjection`` (or any module called as
            ``model(pixel_values=...)`` returning ``image_embeds``).
        size: resize/crop side (224).

    ``forward(frames)``: ``(N, 3, H, W)`` in [0, 1] -> ``(N, D)`` float32 embeddings (not normalised).
    """

    def __init__(self, model: nn.Module, size: int = 224) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.size = size

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        x = center_crop(resize_shorter_side(frames.float(), self.size, "bicubic"), self.size)
        x = normalize(x, CLIP_MEAN, CLIP_STD)
        x = x.to(_model_device(self.model), _model_dtype(self.model))
        return self.model(pixel_values=x).image_embeds.float()


class AestheticScorer(nn.Module):
    """LAION aesthetic score (0..10) of frames: CLIP ViT-L/14 embedding, L2-normalised, linear head.

    Args:
        clip: a :class:`ClipImageFeatures` wrapping CLIP ViT-L/14 (768-d embeddings).
        head: ``nn.Linear(768, 1)`` with LAION's ``sa_0_4_vit_l_14_linear.pth`` weights.

    ``forward(frames)``: ``(N, 3, H, W)`` in [0, 1] -> ``(N,)`` scores.
    """

    def __init__(self, clip: ClipImageFeatures, head: nn.Linear) -> None:
        super().__init__()
        self.clip = clip
        self.head = head.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        f = torch.nn.functional.normalize(self.clip(frames), dim=-1, p=2)
        return self.head(f.to(self.head.weight)).squeeze(-1).float()


def _from_pretrained(
    cls_name: str, source: str | os.PathLike, what: str, hub_id: str, flag: str, **kw: Any
) -> nn.Module:
    import transformers

    cls = getattr(transformers, cls_name)
    try:
        return cls.from_pretrained(str(source), **kw)
    except (OSError, ValueError) as err:
        raise RecaptureError(
            f"cannot load {what} from {str(source)!r} ({type(err).__name__}: {str(err).splitlines()[0]}); "
            f"pass {flag} a local folder saved with save_pretrained, or the hub id {hub_id!r} on a "
            "machine that can reach the Hugging Face hub (HF_HUB_OFFLINE unset) or has it cached"
        ) from err


def load_dino(
    source: str | os.PathLike | None = DINO_HUB_ID, device: str | torch.device = "cpu"
) -> DinoFeatures:
    """DINO ViT-B/16 for subject consistency, from a hub id or a local ``transformers`` folder.

    Args:
        source: ``facebook/dino-vitb16`` or a local folder.
        device: where to put the model.

    Returns:
        a :class:`DinoFeatures`.
    """
    if source is None:
        raise RecaptureError(
            f"subject consistency needs DINO ViT-B/16: pass --weights.dino (hub id {DINO_HUB_ID!r} or a local folder)"
        )
    model = _from_pretrained(
        "ViTModel", source, "DINO ViT-B/16", DINO_HUB_ID, "--weights.dino", add_pooling_layer=False
    )
    return DinoFeatures(model).to(device)


def load_clip(
    source: str | os.PathLike | None = CLIP_B32_HUB_ID, device: str | torch.device = "cpu"
) -> ClipImageFeatures:
    """CLIP image encoder with projection (ViT-B/32 for background consistency).

    Args:
        source: a hub id (``openai/clip-vit-base-patch32``) or a local ``transformers`` folder.
        device: where to put the model.

    Returns:
        a :class:`ClipImageFeatures`.
    """
    if source is None:
        raise RecaptureError(
            f"background consistency needs CLIP ViT-B/32: pass --weights.clip (hub id {CLIP_B32_HUB_ID!r} or a local folder)"
        )
    model = _from_pretrained(
        "CLIPVisionModelWithProjection", source, "CLIP", CLIP_B32_HUB_ID, "--weights.clip"
    )
    return ClipImageFeatures(model).to(device)


def load_aesthetic_head(path: str | os.PathLike | None) -> nn.Linear:
    """LAION's aesthetic linear head (``sa_0_4_vit_l_14_linear.pth``, state dict of ``nn.Linear(768, 1)``).

    Args:
        path: the ``.pth`` file.

    Returns:
        ``nn.Linear(768, 1)`` in eval mode.
    """
    if path is None or not Path(path).is_file():
        raise RecaptureError(
            f"aesthetic quality needs LAION's linear head: file {str(path)!r} does not exist; download "
            f"{AESTHETIC_HEAD_URL} and pass it with --weights.aesthetic_head"
        )
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    head = nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state)
    return head.eval()


def load_aesthetic(
    clip_source: str | os.PathLike | None,
    head_path: str | os.PathLike | None,
    device: str | torch.device = "cpu",
) -> AestheticScorer:
    """CLIP ViT-L/14 plus LAION's linear head for aesthetic quality.

    Args:
        clip_source: ``openai/clip-vit-large-patch14`` or a local ``transformers`` folder.
        head_path: ``sa_0_4_vit_l_14_linear.pth``.
        device: where to put the models.

    Returns:
        an :class:`AestheticScorer`.
    """
    head = load_aesthetic_head(head_path)
    if clip_source is None:
        raise RecaptureError(
            f"aesthetic quality needs CLIP ViT-L/14: pass --weights.aesthetic_clip (hub id {CLIP_L14_HUB_ID!r} or a local folder)"
        )
    clip = _from_pretrained(
        "CLIPVisionModelWithProjection", clip_source, "CLIP ViT-L/14", CLIP_L14_HUB_ID,
        "--weights.aesthetic_clip",
    )
    return AestheticScorer(ClipImageFeatures(clip), head).to(device)


def _import_optional(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RecaptureError(
            f"{what} needs the {module.split('.')[0]!r} package: {VBENCH_EXTRA} ({err})"
        ) from err


def load_musiq(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> Callable[[Tensor], Tensor]:
    """MUSIQ-SPAQ (pyiqa) for imaging quality; ``(1, 3, H, W)`` in [0, 1] -> ``(1,)`` score 0..100.

    Args:
        path: ``musiq_spaq_ckpt-358bb6af.pth`` (from ``MUSIQ_SPAQ_URL``); ``None`` lets pyiqa fetch it.
        device: where to put the model.

    Returns:
        the model in eval mode.
    """
    if path is not None and not Path(path).is_file():
        raise RecaptureError(
            f"MUSIQ weights {str(path)!r} do not exist; download {MUSIQ_SPAQ_URL} and pass --weights.musiq"
        )
    if path is None:
        pyiqa = _import_optional("pyiqa", "imaging quality (MUSIQ)")
        model = pyiqa.create_metric("musiq-spaq", device=torch.device(device), as_loss=False)
    else:
        arch = _import_optional("pyiqa.archs.musiq_arch", "imaging quality (MUSIQ)")
        model = arch.MUSIQ(pretrained_model_path=str(path)).to(device)
    model.eval()
    return model


def load_grit(
    path: str | os.PathLike | None, device: str | torch.device = "cpu"
) -> Callable[[Any], set[str]]:
    """GRiT-B dense captioning (through ``vbench``) as a detector ``uint8 (H, W, 3) array -> class names``.

    Args:
        path: ``grit_b_densecap_objectdet.pth`` (from ``GRIT_URL``).
        device: where to run it.

    Returns:
        a callable giving the set of detected COCO class names in one frame (empty on failure,
        as VBench does).
    """
    if path is None or not Path(path).is_file():
        raise RecaptureError(
            f"object class needs GRiT weights: file {str(path)!r} does not exist; download {GRIT_URL} and pass --weights.grit"
        )
    grit = _import_optional("vbench.third_party.grit_model", "object class (GRiT)")
    model = grit.DenseCaptioning(str(device))
    model.initialize_model_det(model_weight=str(path))

    def detect(frame: Any) -> set[str]:
        try:
            return set(model.run_caption_tensor(frame)[0][0][2])
        except Exception:  # VBench counts a failed frame as "nothing detected"
            return set()

    return detect


def load_callable(spec: str | None, what: str) -> Callable[..., Any]:
    """Import ``"package.module:factory"`` and call the factory with no arguments to get a model.

    Used for the pluggable frame interpolator (motion smoothness; e.g. an AMT-S wrapper you
    supply) and optical-flow model (dynamic degree; e.g. RAFT).

    Args:
        spec: ``"module:attribute"``.
        what: what the callable is for (error messages).

    Returns:
        whatever the factory returns.
    """
    if not spec or ":" not in spec:
        raise RecaptureError(f"{what}: expected 'package.module:factory', got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise RecaptureError(f"{what}: cannot import {spec!r} ({err})") from err
    return factory()


@dataclass
class MetricWeights:
    """Where the metric models come from (local files, local ``transformers`` folders or hub ids).

    Each field belongs to one model registered below (or in :mod:`recapture.metrics.lpips`) with
    :func:`~recapture.metrics.registry.register_model`; a model is loaded only when a requested
    metric needs it.

    Args:
        lpips_alexnet: torchvision's AlexNet state dict (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth).
        lpips_lin: LPIPS v0.1 linear heads (lpips/weights/v0.1/alex.pth from the lpips package).
        dino: DINO ViT-B/16 hub id or local transformers folder (subject_consistency).
        clip: CLIP ViT-B/32 hub id or local folder (background_consistency).
        aesthetic_clip: CLIP ViT-L/14 hub id or local folder (aesthetic_quality).
        aesthetic_head: LAION aesthetic head sa_0_4_vit_l_14_linear.pth (aesthetic_quality).
        musiq: MUSIQ-SPAQ weights musiq_spaq_ckpt-358bb6af.pth (imaging_quality; None: pyiqa
            downloads them; needs the vbench extra).
        grit: GRiT weights grit_b_densecap_objectdet.pth (object_class; needs the vbench extra).
        interpolator: 'module:factory' returning a frame interpolator (frame0, frame1) -> midpoint
            (motion_smoothness; VBench uses AMT-S).
        flow: 'module:factory' returning an optical-flow callable (img1, img2) -> flow (dynamic_degree;
            e.g. recapture.metrics.flow:raft_large).
        device: where the metric models run.
    """

    lpips_alexnet: Path | None = None
    lpips_lin: Path | None = None
    dino: str | None = DINO_HUB_ID
    clip: str | None = CLIP_B32_HUB_ID
    aesthetic_clip: str | None = CLIP_L14_HUB_ID
    aesthetic_head: Path | None = None
    musiq: Path | None = None
    grit: Path | None = None
    interpolator: str | None = None
    flow: str | None = None
    device: str = "cpu"


@register_model("dino", "dino")
def _dino(weights: MetricWeights) -> DinoFeatures:
    return load_dino(weights.dino, weights.device)


@register_model("clip", "clip")
def _clip(weights: MetricWeights) -> ClipImageFeatures:
    return load_clip(weights.clip, weights.device)


@register_model("aesthetic", "aesthetic_clip", "aesthetic_head")
def _aesthetic(weights: MetricWeights) -> AestheticScorer:
    return load_aesthetic(weights.aesthetic_clip, weights.aesthetic_head, weights.device)


@register_model("musiq", "musiq")
def _musiq(weights: MetricWeights) -> Callable[[Tensor], Tensor]:
    return load_musiq(weights.musiq, weights.device)


@register_model("grit", "grit")
def _grit(weights: MetricWeights) -> Callable[[Any], set[str]]:
    return load_grit(weights.grit, weights.device)


@register_model("interpolator", "interpolator")
def _interpolator(weights: MetricWeights) -> Callable[..., Any]:
    if weights.interpolator is None:
        raise RecaptureError(vbench.NO_INTERPOLATOR)
    return load_callable(weights.interpolator, "--weights.interpolator")


@register_model("flow", "flow")
def _flow(weights: MetricWeights) -> Callable[..., Any]:
    if weights.flow is None:
        raise RecaptureError(vbench.NO_FLOW)
    return load_callable(weights.flow, "--weights.flow")
