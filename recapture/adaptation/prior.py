"""A small video prior of the real SVD architecture, trained by the project itself: sizes and VAE losses.

Plain torch (no Lightning); :mod:`recapture.training.pretrain` trains these parts. Each size is a
dataclass whose fields map one-to-one onto the constructor arguments of the real classes
(``AutoencoderKLTemporalDecoder``, ``UNetSpatioTemporalConditionModel``,
``CLIPVisionModelWithProjection``), so a prior is the real architecture with small numbers and the
set it produces loads with :func:`recapture.adaptation.load_components` and the stock
``StableVideoDiffusionPipeline``.

Conventions: video ``(B, T, 3, H, W)`` float in [0, 1]; the VAE works in [-1, 1] internally;
latents are ``(B, T, C, h, w)`` with ``h = H / factor``, scaled by ``vae.config.scaling_factor``
(fitted by :func:`fit_scaling_factor` so that they have unit standard deviation, as SVD's do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
from diffusers import AutoencoderKLTemporalDecoder
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from recapture.adaptation.clip import CLIP_SIZE
from recapture.adaptation.components import (
    PeftUNetSpatioTemporalConditionModel,
    SVDComponents,
    require_peft,
    svd_scheduler,
)
from recapture.adaptation.objective import vae_factor
from recapture.utils import RecaptureError

__all__ = [
    "ImageEncoderSize",
    "UNetSize",
    "VAELoss",
    "VAESize",
    "assemble_components",
    "count_parameters",
    "fit_scaling_factor",
    "reconstruct",
    "seeded",
    "vae_reconstruction_loss",
    "weights_bytes",
]

_GROUPS = 32  # GroupNorm groups of every diffusers block used here: channels must be multiples of 32


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from the global torch RNG seeded with ``seed`` inside the block; the caller's stream is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_channels(name: str, channels: tuple[int, ...]) -> None:
    if not channels or any(c <= 0 or c % _GROUPS for c in channels):
        raise RecaptureError(
            f"{name}={tuple(channels)} must be non-empty multiples of {_GROUPS} (GroupNorm has {_GROUPS} "
            "groups), e.g. (32, 64, 64)"
        )


@dataclass
class VAESize:
    """Size of the temporal-decoder VAE (``AutoencoderKLTemporalDecoder``).

    Args:
        block_out_channels: channels per resolution level, multiples of 32; ``L`` levels give a
            spatial factor of ``2 ** (L - 1)`` (3 levels: 4x, 4 levels: 8x like SVD).
        layers_per_block: ResNet layers per encoder level (the decoder has one more per level).
        latent_channels: latent channels (SVD: 4; the UNet's input has twice as many).
        initial_logvar: the posterior log-variance the fresh encoder outputs everywhere (its
            log-variance rows start at zero weight and this bias). A fresh diffusers VAE starts at
            about 0 (posterior std 1, far above its latents' scale), so the decoder first sees mostly
            noise and a short training run stalls at blurry colours; -6 (std 0.05) lets it learn from
            the start. None keeps diffusers' initialisation.
    """

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    initial_logvar: float | None = -6.0

    @property
    def factor(self) -> int:
        """Pixels per latent along each axis."""
        return vae_factor(self.block_out_channels)

    def build(self, seed: int = 0) -> AutoencoderKLTemporalDecoder:
        """The VAE with seeded random weights (``scaling_factor`` 1 until :func:`fit_scaling_factor`)."""
        _check_channels("vae.block_out_channels", self.block_out_channels)
        if self.layers_per_block < 1 or self.latent_channels < 1:
            raise RecaptureError(
                f"vae.layers_per_block={self.layers_per_block} and vae.latent_channels={self.latent_channels} "
                "must be >= 1"
            )
        with seeded(seed):
            vae = AutoencoderKLTemporalDecoder(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * len(self.block_out_channels),
                block_out_channels=tuple(self.block_out_channels),
                layers_per_block=self.layers_per_block,
                latent_channels=self.latent_channels,
                sample_size=64,
                scaling_factor=1.0,
                force_upcast=False,  # trained in float32: nothing to upcast
            )
        if self.initial_logvar is not None:
            with torch.no_grad():  # moments = (mean, logvar) along channels, after quant_conv
                vae.quant_conv.weight[self.latent_channels :].zero_()
                vae.quant_conv.bias[self.latent_channels :].fill_(self.initial_logvar)
        return vae


@dataclass
class UNetSize:
    """Size of the spatio-temporal denoiser (``UNetSpatioTemporalConditionModel``).

    Every level but the last has spatial+temporal cross-attention, as in SVD (whose last level has
    none either); the input and output channel counts come from the VAE and the cross-attention
    width from the image encoder (:meth:`build`).

    Args:
        block_out_channels: channels per level, multiples of 32 (SVD: 320, 640, 1280, 1280).
        layers_per_block: ResNet (+ attention) layers per down level (SVD: 2).
        attention_head_dim: channels per attention head (heads per level = channels / this).
        addition_time_embed_dim: width of each of the 3 micro-conditioning embeddings (SVD: 256).
    """

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    addition_time_embed_dim: int = 16

    def block_types(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(down_block_types, up_block_types)``: cross-attention everywhere but the lowest level."""
        n = len(self.block_out_channels)
        down = ("CrossAttnDownBlockSpatioTemporal",) * (n - 1) + ("DownBlockSpatioTemporal",)
        up = ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (n - 1)
        return down, up

    def build(
        self,
        latent_channels: int,
        cross_attention_dim: int,
        num_frames: int,
        sample_size: int,
        seed: int = 0,
    ) -> PeftUNetSpatioTemporalConditionModel:
        """The UNet with seeded random weights.

        Args:
            latent_channels: the VAE's latent channels (UNet input: twice that, output: that).
            cross_attention_dim: the image encoder's ``projection_dim``.
            num_frames: default clip length stored in the config (the stock pipeline's default).
            sample_size: latent height stored in the config (the pipeline's default size).
            seed: seed of the weights.
        """
        _check_channels("unet.block_out_channels", self.block_out_channels)
        if len(self.block_out_channels) < 2:
            raise RecaptureError(f"unet.block_out_channels={self.block_out_channels} needs at least 2 levels")
        if any(c % self.attention_head_dim for c in self.block_out_channels):
            raise RecaptureError(
                f"unet.attention_head_dim={self.attention_head_dim} must divide every block width "
                f"{tuple(self.block_out_channels)}"
            )
        down, up = self.block_types()
        with seeded(seed):
            return PeftUNetSpatioTemporalConditionModel(
                sample_size=sample_size,
                in_channels=2 * latent_channels,
                out_channels=latent_channels,
                down_block_types=down,
                up_block_types=up,
                block_out_channels=tuple(self.block_out_channels),
                layers_per_block=self.layers_per_block,
                cross_attention_dim=cross_attention_dim,
                num_attention_heads=tuple(c // self.attention_head_dim for c in self.block_out_channels),
                addition_time_embed_dim=self.addition_time_embed_dim,
                projection_class_embeddings_input_dim=3 * self.addition_time_embed_dim,
                num_frames=num_frames,
            )


@dataclass
class ImageEncoderSize:
    """Size of the CLIP image encoder (``CLIPVisionModelWithProjection``, 224x224 input as in SVD).

    Args:
        hidden_size: transformer width.
        num_hidden_layers: transformer layers.
        num_attention_heads: heads (must divide ``hidden_size``).
        intermediate_size: MLP width.
        patch_size: pixels per patch side (224 / 32 = 7x7 patches).
        projection_dim: embedding width = the UNet's ``cross_attention_dim`` (SVD: 1024).
    """

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    patch_size: int = 32
    projection_dim: int = 64

    def build(self, seed: int = 0) -> CLIPVisionModelWithProjection:
        """The image encoder with seeded random weights (transformers' own initialisation)."""
        if self.hidden_size % self.num_attention_heads or CLIP_SIZE % self.patch_size:
            raise RecaptureError(
                f"image_encoder: num_attention_heads={self.num_attention_heads} must divide hidden_size="
                f"{self.hidden_size} and patch_size={self.patch_size} must divide {CLIP_SIZE}"
            )
        config = CLIPVisionConfig(
            hidden_size=self.hidden_size,
            projection_dim=self.projection_dim,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            image_size=CLIP_SIZE,
            patch_size=self.patch_size,
        )
        with seeded(seed):
            return CLIPVisionModelWithProjection(config)


def chroma_matrix(factor: float) -> torch.Tensor:
    """The 3x3 colour matrix that scales each pixel's distance from the grey of its mean by ``factor``.

    ``(r + g + b) / 3`` is kept and grey stays grey (so 0 of the [-1, 1] range stays 0);
    ``chroma_matrix(a) @ chroma_matrix(b) == chroma_matrix(a * b)``, and ``chroma_matrix(1 / a)``
    is the inverse.
    """
    if not factor > 0:
        raise RecaptureError(f"chroma factor {factor} must be > 0")
    mean = torch.full((3, 3), 1.0 / 3.0, dtype=torch.float64)
    return (mean + factor * (torch.eye(3, dtype=torch.float64) - mean)).float()


def recolour(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """The 3x3 colour ``matrix`` applied to every pixel of ``x`` ``(N, 3, H, W)``."""
    return torch.einsum("oc,nchw->nohw", matrix.to(x.device, x.dtype), x)


class _ScaledColourOutput(nn.Module):
    """Parametrisation of a layer with 3 colour outputs: ``actual = chroma_matrix(1 / factor) @ stored``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.register_buffer("unboost", chroma_matrix(1.0 / factor), persistent=False)
        self.register_buffer("boost", chroma_matrix(factor), persistent=False)

    @staticmethod
    def _mix(matrix: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return (matrix.to(value.dtype) @ value.reshape(3, -1)).reshape(value.shape)

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return self._mix(self.unboost, stored)

    def right_inverse(self, actual: torch.Tensor) -> torch.Tensor:
        return self._mix(self.boost, actual)


def boost_output_colour(vae: AutoencoderKLTemporalDecoder, factor: float) -> None:
    """Store the decoder's last layer (``time_conv_out``) in a colour space with chroma x ``factor``.

    The optimiser then trains the stored weights: the decoder's output is, in effect, a colour
    space whose chroma is ``factor`` times that of RGB, and with the loss scored in the same space
    (``vae_reconstruction_loss(chroma_weight=factor)``) the VAE trains as on clips with ``factor``
    times the colour. The stored weights keep the layer's fresh initialisation (so the actual
    weights start with chroma rows ``factor`` times smaller). Measured with
    ``benchmarks/vae_colour_runs.py`` (``--boost-out``): small temporal VAEs trained in RGB learn
    luminance and stay grey for thousands of CPU steps; the loss weight alone or this storage
    alone do not change that, the two together do. Save :func:`plain_vae` of it: a plain
    diffusers VAE with the same outputs.
    """
    if factor == 1.0:
        return
    layer = vae.decoder.time_conv_out
    fresh = {name: getattr(layer, name).detach().clone() for name in ("weight", "bias")}
    for name, value in fresh.items():
        nn.utils.parametrize.register_parametrization(layer, name, _ScaledColourOutput(factor))
        with torch.no_grad():
            getattr(layer.parametrizations, name).original.copy_(value)


def fix_readout(vae: AutoencoderKLTemporalDecoder, gain: float = 1.5, seed: int = 0) -> None:
    """Hold the decoder's colour readout fixed: ``conv_out`` at orthogonal rows, ``time_conv_out`` at the identity.

    Both stay ordinary diffusers layers (the saved VAE is a plain one); they are only set to these
    values and frozen. Why: trained freely, these two small layers soon weight luminance 3-5x more
    than chroma (the shipped grey VAE: singular values 1.67 / 0.49 / 0.34 for ``conv_out``), after
    which little of the chroma error reaches the layers before them. With the readout fixed and
    balanced, each colour direction of the error reaches the decoder equally (measured with
    ``benchmarks/vae_colour_teacher.py``; together with two channels per GroupNorm group at the
    decoder's full-resolution level, ``vae.block_out_channels[0] >= 64``).

    Args:
        vae: the VAE to change in place.
        gain: norm of each of ``conv_out``'s three rows (over its ``C x 3 x 3`` weights).
        seed: seed of the random orthogonal rows.
    """
    dec = vae.decoder
    if isinstance(getattr(dec.time_conv_out, "parametrizations", None), nn.Module):
        raise RecaptureError("fix_readout and boost_output_colour cannot be combined: choose one")
    with torch.no_grad():
        weight = dec.conv_out.weight
        rows = torch.randn(weight[0].numel(), weight.shape[0], generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64)
        q, _ = torch.linalg.qr(rows)
        weight.copy_((gain * q.T).reshape(weight.shape).to(weight.dtype))
        dec.conv_out.bias.zero_()
        dec.time_conv_out.weight.zero_()
        dec.time_conv_out.bias.zero_()
        centre = dec.time_conv_out.weight.shape[2] // 2
        dec.time_conv_out.weight[:, :, centre, 0, 0] = torch.eye(3, dtype=weight.dtype)
    dec.conv_out.requires_grad_(False)
    dec.time_conv_out.requires_grad_(False)


def plain_vae(vae: AutoencoderKLTemporalDecoder) -> AutoencoderKLTemporalDecoder:
    """A plain diffusers copy of ``vae`` (same config and function) without :func:`boost_output_colour`'s storage."""
    layer = vae.decoder.time_conv_out
    state = {k: v for k, v in vae.state_dict().items() if ".parametrizations." not in k}
    for name in ("weight", "bias"):
        state[f"decoder.time_conv_out.{name}"] = getattr(layer, name).detach().clone()
    copy = AutoencoderKLTemporalDecoder.from_config(vae.config)
    copy.load_state_dict(state)
    return copy.to(next(vae.parameters()).device).eval()


class VAELoss(NamedTuple):
    """Result of :func:`vae_reconstruction_loss`.

    Attributes:
        loss: scalar, ``reconstruction + kl_weight * kl``.
        reconstruction: scalar, mean per-pixel reconstruction error (L1 or squared, in [-1, 1] units).
        kl: scalar, mean KL divergence per latent element to N(0, 1).
        decoded: ``(B, T, 3, H, W)`` the reconstruction in [0, 1] (not clamped, detached).
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    decoded: torch.Tensor


def _check_clip_batch(video: torch.Tensor, factor: int) -> None:
    if video.ndim != 5 or video.shape[2] != 3:
        raise RecaptureError(f"video must have shape (B, T, 3, H, W) in [0, 1], got {tuple(video.shape)}")
    h, w = video.shape[-2:]
    if h % factor or w % factor:
        raise RecaptureError(f"frame size {h}x{w} is not a multiple of the VAE factor {factor}; use e.g. 64x96")


def vae_reconstruction_loss(
    vae: AutoencoderKLTemporalDecoder,
    video: torch.Tensor,
    kl_weight: float = 1e-6,
    reconstruction: str = "l1",
    generator: torch.Generator | None = None,
    chroma_weight: float = 1.0,
) -> VAELoss:
    """Autoencoding loss of whole clips: encode every frame, sample the posterior, decode with the temporal decoder.

    Args:
        vae: the temporal-decoder VAE.
        video: ``(B, T, 3, H, W)`` in [0, 1]; H and W multiples of the VAE factor.
        kl_weight: weight of the mean KL term (keeps the posterior near N(0, 1) and its variance small).
        reconstruction: ``"l1"`` (sharper) or ``"mse"`` (optimises PSNR directly).
        generator: randomness of the posterior sample.
        chroma_weight: the error is scored with its chroma (each pixel's distance from the grey
            of its mean) scaled by this factor (:func:`chroma_matrix`); 1 scores plain RGB.

    Returns:
        :class:`VAELoss` (``reconstruction`` in the scored space).
    """
    if reconstruction not in ("l1", "mse"):
        raise RecaptureError(f"reconstruction={reconstruction!r} must be 'l1' or 'mse'")
    _check_clip_batch(video, vae_factor(vae))
    b, t = video.shape[:2]
    x = video.reshape(b * t, *video.shape[2:]) * 2.0 - 1.0
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator)
    decoded = vae.decode(z, num_frames=t).sample.float()
    err = decoded - x.float()
    if chroma_weight != 1.0:
        err = recolour(err, chroma_matrix(chroma_weight))
    rec = err.abs().mean() if reconstruction == "l1" else err.pow(2).mean()
    kl = posterior.kl().float().sum() / z.numel()
    loss = rec + kl_weight * kl
    out = (decoded.detach().reshape(video.shape) + 1.0) / 2.0
    return VAELoss(loss=loss, reconstruction=rec.detach(), kl=kl.detach(), decoded=out)


@torch.no_grad()
def reconstruct(vae: AutoencoderKLTemporalDecoder, video: torch.Tensor) -> torch.Tensor:
    """Encode (posterior mode) and decode clips: ``(B, T, 3, H, W)`` -> ``(B, T, 3, H, W)`` in [0, 1] (clamped)."""
    _check_clip_batch(video, vae_factor(vae))
    b, t = video.shape[:2]
    dtype = next(vae.parameters()).dtype
    x = (video.reshape(b * t, *video.shape[2:]) * 2.0 - 1.0).to(dtype)
    decoded = vae.decode(vae.encode(x).latent_dist.mode(), num_frames=t).sample.float()
    return ((decoded + 1.0) / 2.0).clamp(0, 1).reshape(video.shape)


@torch.no_grad()
def fit_scaling_factor(vae: AutoencoderKLTemporalDecoder, video: torch.Tensor) -> float:
    """``1 / std`` of the posterior means of ``video``: latents times it have unit standard deviation.

    SVD's latents have about unit std; with another scale nearly every EDM noise level would be
    either pure noise or no noise for the denoiser (see ``shared/specs/svd-adaptation.md``).

    Args:
        vae: the trained VAE.
        video: ``(B, T, 3, H, W)`` in [0, 1], representative clips (a few training clips).

    Returns:
        the factor to store as ``vae.config.scaling_factor``.
    """
    _check_clip_batch(video, vae_factor(vae))
    dtype = next(vae.parameters()).dtype
    x = (video.flatten(0, 1) * 2.0 - 1.0).to(dtype)
    means = torch.cat([vae.encode(chunk).latent_dist.mode().float() for chunk in x.split(16)])
    return float(1.0 / means.std().clamp_min(1e-6))


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def weights_bytes(*modules: nn.Module) -> int:
    """Bytes of the modules' parameters and buffers in their dtype (about their safetensors size)."""
    total = 0
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            total += t.numel() * t.element_size()
    return total


def assemble_components(
    vae: AutoencoderKLTemporalDecoder,
    unet: nn.Module,
    image_encoder: CLIPVisionModelWithProjection,
    num_frames: int,
) -> SVDComponents:
    """The trained parts as an :class:`SVDComponents` set (SVD's EDM scheduler, CLIP normalisation).

    Args:
        vae: the VAE with its fitted ``scaling_factor``.
        unet: the UNet (``in_channels`` = 2 x the VAE's latent channels), built as the PEFT class
            (:meth:`UNetSize.build`).
        image_encoder: the CLIP image encoder (``projection_dim`` = the UNet's cross-attention width).
        num_frames: clip length the prior was trained on.
    """
    latent = vae.config.latent_channels
    if unet.config.in_channels != 2 * latent or unet.config.cross_attention_dim != image_encoder.config.projection_dim:
        raise RecaptureError(
            f"parts do not fit: UNet in_channels={unet.config.in_channels} (needs {2 * latent}) and "
            f"cross_attention_dim={unet.config.cross_attention_dim} (needs the image encoder's projection_dim="
            f"{image_encoder.config.projection_dim}); build the UNet with UNetSize.build"
        )
    return SVDComponents(
        unet=require_peft(unet),
        vae=vae,
        image_encoder=image_encoder,
        scheduler=svd_scheduler(),
        feature_extractor=None,
        num_frames_default=num_frames,
    )
