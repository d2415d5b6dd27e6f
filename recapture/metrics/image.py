"""PSNR and SSIM over all pixels and over masked pixels, computed as GCD / skimage compute them.

* PSNR: ``10 log10(1 / MSE)`` over all ``C*H*W`` values of a frame (skimage, ``data_range=1``).
* SSIM: skimage's defaults with ``data_range=1`` and a channel axis: 7x7 uniform window
  (``scipy.ndimage.uniform_filter``, mode ``'reflect'``), sample covariance, K1 0.01, K2 0.03; mean
  of the SSIM map after cropping a 3-px border, then mean over channels.
* masked PSNR: MSE over the masked values only (mask broadcast over channels).
* masked SSIM (GCD): erode the mask 3 times (3x3 cross, outside counts as 0), crop a 3-px border,
  average the SSIM map over the eroded mask per channel, then over channels.

Empty masks give NaN. Everything is computed in float64, one image at a time (a float64 copy of a
whole clip, five for SSIM, would cost gigabytes at 720p: memory is that of one frame). Per video:
nanmean over frames; per dataset: mean over videos (videos whose value is NaN are left out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recapture.metrics.common import VideoMeanMetric, check_mask, check_pair
from recapture.metrics.registry import register_metric

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
GCD_EROSION_ITERATIONS = 3


def _reflect_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices that pad a length-``n`` axis by ``pad`` with scipy's 'reflect' (edge repeated)."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def uniform_filter(images: Tensor, size: int = SSIM_WINDOW) -> Tensor:
    """Box filter equal to ``scipy.ndimage.uniform_filter(x, size)`` (mode 'reflect') over H and W.

    Args:
        images: ``(N, C, H, W)`` float.
        size: odd window side.

    Returns:
        ``(N, C, H, W)``, the mean over the ``size x size`` window around each pixel.
    """
    if size % 2 != 1:
        raise ValueError(f"uniform_filter size must be odd, got {size}")
    pad = size // 2
    h, w = images.shape[-2:]
    x = images.index_select(-2, _reflect_index(h, pad, images.device))
    x = x.index_select(-1, _reflect_index(w, pad, images.device))
    x = F.avg_pool2d(x, (size, 1), stride=1)
    return F.avg_pool2d(x, (1, size), stride=1)


def ssim_map(pred: Tensor, target: Tensor, data_range: float = 1.0, win_size: int = SSIM_WINDOW) -> Tensor:
    """SSIM map as skimage's ``structural_similarity(..., full=True)`` computes it, per channel.

    Args:
        pred: ``(..., C, H, W)`` float.
        target: same shape.
        data_range: value range of the images (1 for [0, 1]).
        win_size: side of the uniform window.

    Returns:
        ``(..., C, H, W)`` float64 (uncropped; the border is affected by the padding).
    """
    if pred.shape != target.shape:
        raise ValueError(f"ssim_map: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    lead = pred.shape[:-2]
    x = pred.detach().double().reshape(-1, 1, *pred.shape[-2:])
    y = target.detach().double().reshape(-1, 1, *target.shape[-2:])
    stats = uniform_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), win_size)
    ux, uy, uxx, uyy, uxy = stats.unbind(1)
    cov_norm = win_size**2 / (win_size**2 - 1)  # sample covariance
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux**2 + uy**2 + c1) * (vx + vy + c2)
    return (num / den).reshape(*lead, *pred.shape[-2:])


def _per_image(name: str, fn, pred: Tensor, target: Tensor, *extra: Tensor) -> Tensor:  # noqa: ANN001
    """``fn`` applied to each ``(C, H, W)`` image of ``pred`` / ``target`` (``(..., C, H, W)``, same shape), stacked.

    ``extra`` tensors (masks ``(..., 1, H, W)``) are broadcast to the leading shape. ``fn`` maps
    ``(1, C, H, W)`` tensors to a ``(1,)`` result; the result has the leading shape.
    """
    if pred.shape != target.shape:
        raise ValueError(f"{name}: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    lead = pred.shape[:-3]
    tensors = [pred, target, *(t.expand(*lead, *t.shape[-3:]) for t in extra)]
    flat = [t.reshape(-1, *t.shape[-3:]) for t in tensors]
    n = flat[0].shape[0]
    if n == 0:
        return torch.empty(lead, dtype=torch.float64, device=pred.device)
    return torch.cat([fn(*(t[i : i + 1] for t in flat)) for i in range(n)]).reshape(lead)


def _crop(x: Tensor, border: int) -> Tensor:
    return x[..., border : x.shape[-2] - border, border : x.shape[-1] - border]


def binary_erosion(mask: Tensor, iterations: int = 1) -> Tensor:
    """Binary erosion with a 3x3 cross, pixels outside the image counted as 0 (scipy defaults).

    Args:
        mask: ``(..., H, W)`` bool.
        iterations: how many times to erode.

    Returns:
        ``(..., H, W)`` bool.
    """
    m = mask.bool()
    lead = m.shape[:-2]
    m = m.reshape(-1, 1, *m.shape[-2:])
    for _ in range(iterations):
        p = F.pad(m.to(torch.uint8), (1, 1, 1, 1), value=0).bool()
        m = p[..., 1:-1, 1:-1] & p[..., :-2, 1:-1] & p[..., 2:, 1:-1] & p[..., 1:-1, :-2] & p[..., 1:-1, 2:]
    return m.reshape(*lead, *m.shape[-2:])


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR of each image over all its values (skimage ``peak_signal_noise_ratio``).

    Args:
        pred: ``(..., C, H, W)`` float.
        target: same shape.
        data_range: value range of the images.

    Returns:
        ``(...)`` float64 in dB (inf where the images are equal).
    """
    def one(p: Tensor, t: Tensor) -> Tensor:
        mse = (p.detach().double() - t.detach().double()).pow(2).mean(dim=(-3, -2, -1))
        return 10 * torch.log10(data_range**2 / mse)

    return _per_image("psnr", one, pred, target)


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR over the masked values only (mask broadcast over channels); NaN for an empty mask.

    Args:
        pred: ``(..., C, H, W)`` float.
        target: same shape.
        mask: ``(..., 1, H, W)`` bool or {0, 1}.
        data_range: value range of the images.

    Returns:
        ``(...)`` float64 in dB.
    """
    def one(p: Tensor, t: Tensor, mk: Tensor) -> Tensor:
        m = (mk > 0.5).double() if mk.dtype != torch.bool else mk.double()
        sq = (p.detach().double() - t.detach().double()).pow(2) * m
        n = m.sum(dim=(-3, -2, -1)) * p.shape[-3]
        mse = sq.sum(dim=(-3, -2, -1)) / n
        return torch.where(n > 0, 10 * torch.log10(data_range**2 / mse), torch.nan)

    return _per_image("masked_psnr", one, pred, target, mask)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """SSIM of each image: mean of the map after a 3-px border crop, then mean over channels.

    Args:
        pred: ``(..., C, H, W)`` float.
        target: same shape.
        data_range: value range of the images.

    Returns:
        ``(...)`` float64.
    """
    def one(p: Tensor, t: Tensor) -> Tensor:  # one channel at a time: 5 float64 planes, not 15
        border = (SSIM_WINDOW - 1) // 2
        per_channel = [_crop(ssim_map(p[:, c : c + 1], t[:, c : c + 1], data_range), border).mean(dim=(-3, -2, -1))
                       for c in range(p.shape[1])]
        return torch.stack(per_channel, dim=-1).mean(dim=-1)

    return _per_image("ssim", one, pred, target)


def masked_ssim(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    data_range: float = 1.0,
    erosion_iterations: int = GCD_EROSION_ITERATIONS,
) -> Tensor:
    """GCD's masked SSIM: erode the mask, crop a 3-px border, masked mean per channel, mean over channels.

    Args:
        pred: ``(..., C, H, W)`` float.
        target: same shape.
        mask: ``(..., 1, H, W)`` bool or {0, 1}.
        data_range: value range of the images.
        erosion_iterations: binary erosions (3x3 cross) applied to the mask first.

    Returns:
        ``(...)`` float64; NaN where the eroded, cropped mask is empty.
    """
    border = (SSIM_WINDOW - 1) // 2

    def one(p: Tensor, t: Tensor, mk: Tensor) -> Tensor:
        m = (mk > 0.5) if mk.dtype != torch.bool else mk
        m = _crop(binary_erosion(m, erosion_iterations), border).double()
        n = m.sum(dim=(-2, -1))  # (1, 1)
        per_channel = torch.cat([(_crop(ssim_map(p[:, c : c + 1], t[:, c : c + 1], data_range), border) * m)
                                 .sum(dim=(-2, -1)) for c in range(p.shape[1])], dim=-1) / n
        return torch.where(n[..., 0] > 0, per_channel.mean(dim=-1), torch.nan)

    return _per_image("masked_ssim", one, pred, target, mask)


def mean_frame_psnr(values: Tensor) -> Tensor:
    """The project's one rule for a video's PSNR from its frames' ``(..., T)`` values.

    Frames equal to the target (infinite PSNR, e.g. the input's first frame, which in gradual mode is
    the target's) are left out of the mean like undefined (NaN) ones, so one exact frame does not make
    the mean infinite; a video whose every defined frame is exact stays ``inf``; no defined frame
    gives NaN. Used by ``recapture evaluate``, the callbacks' metrics and the benchmark alike.
    """
    finite = values.masked_fill(torch.isinf(values), torch.nan)
    mean = torch.nanmean(finite, dim=-1)
    all_exact = torch.isinf(values).any(dim=-1) & torch.isnan(finite).all(dim=-1)
    return torch.where(all_exact, torch.full_like(mean, torch.inf), mean)


def video_psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-video PSNR: the mean over frames of the (masked when ``mask`` is given) frame PSNR, with
    exact frames left out (:func:`mean_frame_psnr`).

    Args:
        pred: ``(B, T, C, H, W)`` or ``(T, C, H, W)`` in [0, 1].
        target: same shape.
        mask: optional ``(B, T, 1, H, W)`` or ``(T, 1, H, W)``.

    Returns:
        ``(B,)`` float64 in dB.
    """
    p, t = check_pair(pred, target)
    values = psnr(p, t) if mask is None else masked_psnr(p, t, check_mask(mask, p))
    return mean_frame_psnr(values)


def video_ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-video SSIM: nanmean over frames of the (GCD-masked when ``mask`` is given) frame SSIM.

    Args:
        pred: ``(B, T, C, H, W)`` or ``(T, C, H, W)`` in [0, 1].
        target: same shape.
        mask: optional ``(B, T, 1, H, W)`` or ``(T, 1, H, W)``.

    Returns:
        ``(B,)`` float64.
    """
    p, t = check_pair(pred, target)
    values = ssim(p, t) if mask is None else masked_ssim(p, t, check_mask(mask, p))
    return torch.nanmean(values, dim=1)


@register_metric("psnr", inputs=("pred", "target"), masked=True)
class VideoPSNR(VideoMeanMetric):
    """PSNR (dB) per frame, nanmean over frames per video, mean over videos.

    ``update(pred, target, mask=None)`` takes ``(B, T, C, H, W)`` or ``(T, C, H, W)`` videos in
    [0, 1] and an optional ``(B, T, 1, H, W)`` / ``(T, 1, H, W)`` mask; with a mask the MSE is
    taken over the masked values only (``psnr_masked``).
    """

    higher_is_better = True

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch of videos."""
        self._add_videos(video_psnr(pred, target, mask))


@register_metric("ssim", inputs=("pred", "target"), masked=True)
class VideoSSIM(VideoMeanMetric):
    """SSIM (skimage recipe) per frame, nanmean over frames per video, mean over videos.

    ``update(pred, target, mask=None)`` as :class:`VideoPSNR`; with a mask, GCD's masked SSIM.
    """

    higher_is_better = True

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch of videos."""
        self._add_videos(video_ssim(pred, target, mask))
