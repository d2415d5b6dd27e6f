"""Encoding for fine-tuning: everything the two kinds of training step read, computed once.

Plain torch (no Lightning). :func:`encode_training_tensors` runs the VAE and the CLIP image encoder
once over the anchor and the source clip and returns CPU tensors, so that only the UNet needs the
accelerator during training:

* temporal steps: the anchor clip's latents ``(T, 4, h, w)``, its validity mask at latent resolution
  (the loss's mask policy, ``EDMConfig.mask_threshold``), and the conditioning of the first anchor
  frame (the paper's image prompt ``V_0^a``): its CLIP embedding and ``condition_draws``
  noise-augmented VAE latents (one is picked per step, so the noise augmentation stays random
  without keeping the VAE around);
* spatial steps: a pool of ``pool_size`` augmented versions of every source frame (kornia random
  resized crop + small colour jitter) encoded to latents, and the conditioning of every source frame
  (each spatial sample is conditioned on another, randomly chosen source frame).

Encoding here and at sampling go through :func:`encoding_session`: the models are placed on the
device for the stage and a float16 VAE whose config asks for it (``force_upcast``, as SVD's does) is
run in float32, exactly as ``StableVideoDiffusionPipeline`` encodes its image prompt.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from recapture import caching
from recapture.adaptation.objective import (
    EDMConfig,
    encode_condition_latents,
    encode_image_embeds,
    encode_latents,
    mask_to_latent,
)
from recapture.utils import RecaptureError, atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "AugmentConfig",
    "TrainingTensors",
    "encode_training_tensors",
    "encoding_session",
    "vae_upcast",
]


@dataclass
class AugmentConfig:
    """Augmentations of source frames for the spatial LoRA (kornia.augmentation).

    Args:
        pool_size: augmented versions encoded per source frame (drawn from at random each step).
        crop_scale: area range of ``RandomResizedCrop`` (the crop is resized back to the frame size).
        crop_ratio: aspect-ratio range of the crop, relative to the frame's own aspect ratio.
        brightness: ``ColorJitter`` brightness; kept small so the LoRA learns the true colours.
        contrast: ``ColorJitter`` contrast.
        saturation: ``ColorJitter`` saturation.
        hue: ``ColorJitter`` hue.
        hflip: probability of a horizontal flip (off by default: text and handedness matter).
        condition_draws: noise-augmented encodings cached per conditioning frame.
    """

    pool_size: int = 8
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.05
    contrast: float = 0.05
    saturation: float = 0.05
    hue: float = 0.01
    hflip: float = 0.0
    condition_draws: int = 4


@dataclass
class TrainingTensors:
    """Everything the training steps read, already encoded (CPU tensors).

    Stored as safetensors (:meth:`save` / :meth:`load`): plain tensors and a JSON header, nothing a
    crafted file could execute. The header carries the sha256 of the content, checked on load; the
    latent cache reads and writes entries with :meth:`load_cached` / :meth:`save_cached`.
    """

    anchor_latents: torch.Tensor  # (T, 4, h, w) scaled latents of the anchor clip
    anchor_mask: torch.Tensor  # (T, 1, h, w) latent validity mask
    anchor_cond_latents: torch.Tensor  # (D, 4, h, w) noise-augmented draws of the first anchor frame
    anchor_image_embeds: torch.Tensor  # (1, 1, E)
    source_pool: torch.Tensor  # (P, T, 4, h, w) augmented source-frame latents
    source_cond_latents: torch.Tensor  # (D, T, 4, h, w)
    source_image_embeds: torch.Tensor  # (T, 1, E)
    meta: dict[str, Any] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "meta"}

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file atomically (the ``meta`` dict and the content's sha256 in its header)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        meta = json.dumps(self.meta)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"meta": meta, "sha256": _digest(tensors, meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainingTensors:
        """Read a file written by :meth:`save`, checking its checksum.

        Raises:
            RecaptureError: the file is not a complete safetensors file of these fields, or its
                content does not match the checksum it was written with.
        """
        from safetensors import SafetensorError, safe_open

        names = [f.name for f in fields(cls) if f.name != "meta"]
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = set(f.keys())
                if keys != set(names):
                    raise RecaptureError(f"{path} holds {sorted(keys)}, not the training tensors {names}")
                header = f.metadata() or {}
                if "sha256" not in header:
                    raise RecaptureError(f"{path} has no checksum (written by an older version, or not by recapture)")
                tensors = {k: f.get_tensor(k) for k in names}
        except (SafetensorError, OSError, ValueError) as err:
            if isinstance(err, RecaptureError):
                raise
            raise RecaptureError(f"{path} is not a readable training-tensor cache ({type(err).__name__}: {err})") from err
        raw_meta = header.get("meta", "{}")
        if _digest(tensors, raw_meta) != header["sha256"]:
            raise RecaptureError(f"{path} fails its checksum: its content changed after it was written")
        try:
            meta = json.loads(raw_meta)
        except ValueError as err:  # pragma: no cover - the checksum covers it
            raise RecaptureError(f"{path} has an unreadable header ({err})") from err
        return cls(**tensors, meta=meta)

    @classmethod
    def load_cached(cls, path: Path) -> TrainingTensors | None:
        """A latent-cache entry, or None when absent or bad (reported in one warning line, removed)."""
        caching.open_folder(path.parent)
        if not path.is_file():
            return None
        try:
            tensors = cls.load(path)
        except RecaptureError as err:
            if isinstance(err.__cause__, FileNotFoundError):  # evicted by another process meanwhile
                return None
            caching.discard(path, "latent", str(err).replace(f"{path} ", "", 1), log)
            return None
        caching.mark_used(path)
        return tensors

    def save_cached(self, path: Path) -> Path:
        """Save as a latent-cache entry, then keep the cache folder under its size cap (LRU eviction)."""
        caching.open_folder(path.parent)
        self.save(path)
        caching.enforce_cap(path.parent, caching.CACHES["latents"].suffix, keep=(path,))
        return path


def _digest(tensors: dict[str, torch.Tensor], meta: str) -> str:
    """sha256 of the tensors (names, dtypes, shapes, values) and the JSON metadata."""
    return caching.content_digest(tensors, meta)


@contextlib.contextmanager
def vae_upcast(vae: torch.nn.Module) -> Iterator[None]:
    """Run a float16 VAE in float32 inside the block when its config asks for it (``force_upcast``).

    The SVD pipeline encodes the image prompt this way (float16 encoding can overflow); decoding
    stays in the VAE's own dtype, as in the pipeline.
    """
    if next(vae.parameters()).dtype != torch.float16 or not getattr(vae.config, "force_upcast", False):
        yield
        return
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(torch.float16)


@contextlib.contextmanager
def encoding_session(components: Any, device: torch.device | str) -> Iterator[torch.device]:
    """VAE and image encoder on ``device``, the VAE upcast when it asks for it; both restored after.

    Args:
        components: ``SVDComponents``.
        device: where to encode.

    Yields:
        the device.
    """
    with components.placed(device, ("vae", "image_encoder")) as dev, vae_upcast(components.vae):
        yield dev


@torch.no_grad()
def encode_training_tensors(
    source: torch.Tensor,
    anchor: torch.Tensor,
    anchor_mask: torch.Tensor,
    components: Any,
    device: torch.device | str,
    augment: AugmentConfig,
    objective: EDMConfig,
    seed: int,
    progress: bool = True,
) -> TrainingTensors:
    """Encode the anchor and source clips once with the VAE and CLIP; return CPU tensors.

    Args:
        source: source video ``(T, 3, H, W)`` in [0, 1].
        anchor: anchor video ``(T, 3, H, W)`` in [0, 1].
        anchor_mask: its validity mask ``(T, 1, H, W)`` in {0, 1}.
        components: ``SVDComponents`` (``vae``, ``image_encoder``).
        device: where to encode; the encoders go back where they were afterwards.
        augment: source-frame augmentations and conditioning draws.
        objective: the loss settings (noise augmentation of the prompt, latent mask threshold).
        seed: seed of the augmentations and of the noise augmentation.
        progress: progress bars.

    Returns:
        :class:`TrainingTensors` on the CPU.

    Raises:
        RecaptureError: the mask has no valid latent cell.
    """
    from tqdm.auto import tqdm

    factor = components.vae_scale_factor
    mask = mask_to_latent(anchor_mask, factor, objective.mask_threshold).cpu()
    if mask.sum() == 0:
        raise RecaptureError(
            "the anchor's validity mask is empty at latent resolution on every frame: nothing to learn "
            "from. Use a smaller trajectory amount, or lower model.objective.mask_threshold."
        )
    with encoding_session(components, device) as device:
        vae, clip = components.vae, components.image_encoder
        # noise augmentation is drawn where the images are (a CPU generator cannot draw CUDA tensors)
        g = torch.Generator(device=device).manual_seed(seed)
        source, anchor = source.to(device), anchor.to(device)
        anchor_latents = encode_latents(vae, anchor).cpu()
        # CLIP embeddings have no randomness: once; only the noise-augmented VAE latents vary per draw
        embeds_a = encode_image_embeds(clip, anchor[:1]).cpu()
        embeds_s = encode_image_embeds(clip, source).cpu()
        cond_a, cond_s = [], []
        for _ in tqdm(range(max(1, augment.condition_draws)), desc="encode conditioning", leave=False,
                      disable=not progress):
            cond_a.append(encode_condition_latents(vae, anchor[:1], objective.noise_aug_strength, g).cpu())
            cond_s.append(encode_condition_latents(vae, source, objective.noise_aug_strength, g).cpu())
        aug = _augmenter(augment)
        pool = []
        # kornia draws from the global RNG: seed it here without disturbing the caller's stream
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for _ in tqdm(range(max(1, augment.pool_size)), desc="encode augmented frames", leave=False,
                          disable=not progress):
                pool.append(encode_latents(vae, aug(source).clamp(0, 1)).cpu())
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return TrainingTensors(
        anchor_latents=anchor_latents,
        anchor_mask=mask,
        anchor_cond_latents=torch.cat(cond_a),
        anchor_image_embeds=embeds_a,
        source_pool=torch.stack(pool),
        source_cond_latents=torch.stack(cond_s),
        source_image_embeds=embeds_s,
        meta={"latent_factor": factor, "valid_latent_fraction": float(mask.mean())},
    )


def _augmenter(config: AugmentConfig) -> torch.nn.Module:
    import kornia.augmentation as K

    return torch.nn.Sequential(
        _FrameSizedCrop(config),
        K.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue, p=1.0),
        K.RandomHorizontalFlip(p=config.hflip),
    )


class _FrameSizedCrop(torch.nn.Module):
    """kornia ``RandomResizedCrop`` whose output size is the input frame's size."""

    def __init__(self, config: AugmentConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        import kornia.augmentation as K

        h, w = frames.shape[-2:]
        lo, hi = self.config.crop_ratio
        crop = K.RandomResizedCrop(size=(h, w), scale=self.config.crop_scale, ratio=(lo * w / h, hi * w / h), p=1.0)
        return crop(frames)


@dataclass
class TrainingEncoder:
    """What encoding the training tensors needs from the model, declared: the frozen encoders, their
    identity (for cache keys) and the loss settings that shape the tensors.

    The LightningModule hands one to the data module (``ReCaptureModule.training_encoder()``), which
    calls :meth:`encode` and keys its cache by :meth:`cache_key_parts`; the data module holds no model
    and the mask policy stays with the loss (``objective.mask_threshold``).

    Attributes:
        components: ``SVDComponents`` (``vae``, ``image_encoder``).
        components_id: identifies the weights and dtypes (``ReCaptureModule.components_id()``).
        objective: the loss settings (prompt noise augmentation, latent mask threshold).
    """

    components: Any
    components_id: str
    objective: EDMConfig

    def cache_key_parts(self) -> tuple[Any, ...]:
        """Everything of the model side that changes the encoded tensors."""
        return self.components_id, self.objective.noise_aug_strength, self.objective.mask_threshold

    def encode(
        self, source: torch.Tensor, anchor: torch.Tensor, anchor_mask: torch.Tensor, device: torch.device | str,
        augment: AugmentConfig, seed: int,
    ) -> TrainingTensors:
        """:func:`encode_training_tensors` with these encoders and settings."""
        return encode_training_tensors(source, anchor, anchor_mask, self.components, device, augment, self.objective,
                                       seed)
