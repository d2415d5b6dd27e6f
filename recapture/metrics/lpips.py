"""LPIPS v0.1 (AlexNet) in our own small module, loading the usual weight files.

The backbone loads torchvision's ``alexnet`` state dict (keys ``features.0.weight`` ...
``features.10.bias``; the classifier keys are ignored) and the linear heads load the ``lpips``
package's ``lpips/weights/v0.1/alex.pth`` (keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``).
Neither torchvision nor the ``lpips`` package is needed.

Recipe: inputs in [0, 1] are scaled to [-1, 1], shifted and scaled by the lpips scaling layer, passed
through AlexNet; the five ReLU outputs are unit-normalised over channels, their squared differences
weighted by the 1x1 linear heads, averaged over space and summed over layers. Masked LPIPS follows
DyCheck: both images are multiplied by the mask (before scaling to [-1, 1]), the spatial LPIPS map
(each layer's map bilinearly upsampled to the input size, summed) is averaged over the mask.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recapture.metrics.common import VideoMeanMetric, check_mask, check_pair
from recapture.metrics.registry import register_metric, register_model
from recapture.utils import RecaptureError, check_video

if TYPE_CHECKING:
    from recapture.metrics.backbones import MetricWeights

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LPIPS_LIN_SOURCE = (
    "the lpips package's lpips/weights/v0.1/alex.pth (github.com/richzhang/PerceptualSimilarity)"
)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
# Indices into AlexNet's `features` after which the LPIPS taps sit (relu1 .. relu5).
_TAPS = (1, 4, 7, 9, 11)


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional trunk with torchvision's layer indices (``features.{0,3,6,8,10}``).

    ``forward(x)`` takes ``(N, 3, H, W)`` normalised images and returns the five ReLU outputs
    ``[(N, 64, h1, w1), (N, 192, ...), (N, 384, ...), (N, 256, ...), (N, 256, ...)]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                outs.append(x)
        return outs


class _LinearHead(nn.Module):
    """``model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))`` as in the lpips package."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        # Dropout is identity at evaluation; skip it so a parent's .train() cannot change scores.
        return self.model[1](x)


def _unit_normalize(x: Tensor, eps: float = 1e-10) -> Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 with an AlexNet backbone.

    Submodules: ``net`` (:class:`AlexNetFeatures`) and ``lin0`` ... ``lin4``. Build it with
    :func:`load_lpips` to get the published weights; a bare ``LPIPS()`` is randomly initialised.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        for k, c in enumerate(CHANNELS):
            setattr(self, f"lin{k}", _LinearHead(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()
        self.requires_grad_(False)

    def forward(self, img0: Tensor, img1: Tensor, normalize: bool = True, spatial: bool = False) -> Tensor:
        """LPIPS distance between two image batches.

        Args:
            img0: ``(N, 3, H, W)`` in [0, 1] (or [-1, 1] with ``normalize=False``).
            img1: same shape.
            normalize: scale the inputs from [0, 1] to [-1, 1] first.
            spatial: return the per-pixel map instead of the spatial mean.

        Returns:
            ``(N,)``, or ``(N, 1, H, W)`` with ``spatial=True``.
        """
        check_video(img0, "LPIPS img0", first_axis="N")
        check_video(img1, "LPIPS img1", first_axis="N", shape=tuple(img0.shape), fix="img0 and img1 must match")
        if normalize:
            img0, img1 = img0 * 2 - 1, img1 * 2 - 1
        x = torch.cat([img0, img1]).to(self.shift.dtype)
        feats = self.net((x - self.shift) / self.scale)
        total = None
        for k, f in enumerate(feats):
            f0, f1 = _unit_normalize(f).chunk(2)
            d = getattr(self, f"lin{k}")((f0 - f1).pow(2))
            if spatial:
                d = F.interpolate(d, size=img0.shape[-2:], mode="bilinear", align_corners=False)
            else:
                d = d.mean(dim=(2, 3), keepdim=True)
            total = d if total is None else total + d
        return total if spatial else total.flatten()


def _load_file(path: str | os.PathLike, what: str, how: str) -> dict[str, Tensor]:
    if path is None or not Path(path).is_file():
        raise RecaptureError(f"LPIPS needs {what}: file {str(path)!r} does not exist; {how}")
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_lpips(
    alexnet_path: str | os.PathLike | None,
    lin_path: str | os.PathLike | None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """Build LPIPS v0.1 (AlexNet) from the two weight files.

    Args:
        alexnet_path: torchvision's AlexNet state dict (``alexnet-owt-7be5be79.pth``, from
            ``https://download.pytorch.org/models/alexnet-owt-7be5be79.pth``).
        lin_path: the lpips linear heads (``lpips/weights/v0.1/alex.pth`` in the lpips package).
        device: where to put the model.

    Returns:
        an :class:`LPIPS` in eval mode without gradients.
    """
    backbone = _load_file(
        alexnet_path,
        "the AlexNet backbone weights (torchvision's alexnet state dict)",
        f"download {ALEXNET_URL} and pass its path (--weights.lpips_alexnet)",
    )
    heads = _load_file(
        lin_path, "the LPIPS v0.1 linear heads (alex.pth)", f"pass {LPIPS_LIN_SOURCE} (--weights.lpips_lin)"
    )
    model = LPIPS()
    feats = {k.removeprefix("module."): v for k, v in backbone.items()}
    feats = {k: v for k, v in feats.items() if k.startswith("features.")}
    missing = set(model.net.state_dict()) - set(feats)
    if missing:
        raise RecaptureError(
            f"{alexnet_path} is not torchvision's alexnet state dict (missing {sorted(missing)}); "
            f"download {ALEXNET_URL}"
        )
    model.net.load_state_dict(feats)
    lin_keys = {k for k in model.state_dict() if k.startswith("lin")}
    lins = {k: v for k, v in heads.items() if k in lin_keys}
    if set(lins) != lin_keys:
        raise RecaptureError(
            f"{lin_path} is not the LPIPS v0.1 alex.pth (missing {sorted(lin_keys - set(lins))}); "
            f"use {LPIPS_LIN_SOURCE}"
        )
    model.load_state_dict(lins, strict=False)
    return model.to(device)


def lpips_frames(
    model: LPIPS, pred: Tensor, target: Tensor, mask: Tensor | None = None, chunk: int = 16
) -> Tensor:
    """LPIPS per frame; with a mask, DyCheck's masked LPIPS (NaN where the mask is empty).

    Args:
        model: an :class:`LPIPS`.
        pred: ``(N, 3, H, W)`` in [0, 1].
        target: same shape.
        mask: optional ``(N, 1, H, W)`` bool or {0, 1}.
        chunk: frames per forward pass.

    Returns:
        ``(N,)`` float64.
    """
    device = model.shift.device
    out = []
    for s in range(0, pred.shape[0], chunk):
        p = pred[s : s + chunk].to(device, torch.float32)
        t = target[s : s + chunk].to(device, torch.float32)
        with torch.no_grad():
            if mask is None:
                out.append(model(p, t).double().cpu())
                continue
            m = mask[s : s + chunk].to(device, torch.float32)
            m = (m > 0.5).float()
            lp = model(p * m, t * m, spatial=True).double()
            md = m.double()
            n = md.sum(dim=(1, 2, 3))
            v = (lp * md).sum(dim=(1, 2, 3)) / n
            out.append(torch.where(n > 0, v, torch.nan).cpu())
    return torch.cat(out)


def video_lpips(model: LPIPS, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-video LPIPS: nanmean over frames.

    Args:
        model: an :class:`LPIPS`.
        pred: ``(B, T, 3, H, W)`` or ``(T, 3, H, W)`` in [0, 1].
        target: same shape.
        mask: optional ``(B, T, 1, H, W)`` or ``(T, 1, H, W)``.

    Returns:
        ``(B,)`` float64.
    """
    p, t = check_pair(pred, target)
    m = None if mask is None else check_mask(mask, p)
    b, n = p.shape[:2]
    values = lpips_frames(model, p.flatten(0, 1), t.flatten(0, 1), None if m is None else m.flatten(0, 1))
    return torch.nanmean(values.view(b, n), dim=1)


@register_metric("lpips", model="lpips", inputs=("pred", "target"), masked=True)
class VideoLPIPS(VideoMeanMetric):
    """LPIPS v0.1 (AlexNet) per frame, nanmean over frames per video, mean over videos.

    Args:
        model: a loaded :class:`LPIPS` (see :func:`load_lpips`).

    ``update(pred, target, mask=None)`` takes ``(B, T, 3, H, W)`` / ``(T, 3, H, W)`` videos in
    [0, 1]; with a mask, DyCheck's masked LPIPS (``lpips_masked``).
    """

    higher_is_better = False

    def __init__(self, model: LPIPS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch of videos."""
        self._add_videos(video_lpips(self.model, pred, target, mask))


@register_model("lpips", "lpips_alexnet", "lpips_lin")
def _lpips_model(weights: MetricWeights) -> LPIPS:
    return load_lpips(weights.lpips_alexnet, weights.lpips_lin, weights.device)
