"""LightningDataModule: source video -> anchor video (cached) -> latents (cached) -> training batches.

``prepare_data`` renders the anchor (stage 1, cached on disk by :func:`recapture.anchor.build_anchor`).
``setup`` encodes, once, everything the two kinds of training step need with the VAE and the CLIP
image encoder, caches the tensors on disk, and hands the encoders back to the CPU so only the UNet
stays on the accelerator during training:

* temporal steps: the anchor clip's latents ``(T, 4, h, w)``, its validity mask at latent resolution,
  and the conditioning of the first anchor frame (the paper's image prompt ``V_0^a``): CLIP embedding
  and ``augment.condition_draws`` noise-augmented VAE latents (one is picked per step, so the
  noise augmentation stays random without keeping the VAE around);
* spatial steps: a pool of ``augment.pool_size`` augmented versions of every source frame
  (kornia random resized crop + small colour jitter), encoded to latents, and the conditioning of
  every source frame (each spatial sample is conditioned on another, randomly chosen source frame).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from recapture.anchor import AnchorConfig, AnchorResult, build_anchor
from recapture.cameras import TrajectorySpec
from recapture.depth import DepthConfig, make_depth_estimator
from recapture.utils import RecaptureError, atomic_path, hash_inputs

log = logging.getLogger(__name__)

EXAMPLE = "example"


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
    """Everything the training steps read, already encoded (CPU tensors)."""

    anchor_latents: torch.Tensor  # (T, 4, h, w) scaled latents of the anchor clip
    anchor_mask: torch.Tensor  # (T, 1, h, w) latent validity mask
    anchor_cond_latents: torch.Tensor  # (D, 4, h, w) noise-augmented draws of the first anchor frame
    anchor_image_embeds: torch.Tensor  # (1, 1, E)
    source_pool: torch.Tensor  # (P, T, 4, h, w) augmented source-frame latents
    source_cond_latents: torch.Tensor  # (D, T, 4, h, w)
    source_image_embeds: torch.Tensor  # (T, 1, E)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(asdict(self), tmp)

    @classmethod
    def load(cls, path: Path) -> TrainingTensors:
        return cls(**torch.load(path, map_location="cpu", weights_only=False))


class _StepDataset(Dataset):
    """One item per training step: a temporal clip and a spatial batch, drawn at random.

    Both kinds are in every item (they are small latents); the LightningModule decides which kind a
    step trains from its global step and schedule, so the alternation survives resuming.
    """

    def __init__(self, tensors: TrainingTensors, length: int, spatial_batch_size: int, seed: int) -> None:
        self.t = tensors
        self.length = length
        self.spatial_batch_size = spatial_batch_size
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        t = self.t
        num_frames = t.source_pool.shape[1]
        draws = t.anchor_cond_latents.shape[0]
        pool = t.source_pool.shape[0]
        b = self.spatial_batch_size
        frame = torch.randint(num_frames, (b,), generator=g)
        version = torch.randint(pool, (b,), generator=g)
        # condition each spatial sample on ANOTHER source frame (when there is more than one)
        offset = torch.randint(1, max(num_frames, 2), (b,), generator=g)
        cond_frame = (frame + offset) % num_frames
        cond_draw = torch.randint(draws, (b,), generator=g)
        return {
            "temporal_latents": t.anchor_latents,
            "temporal_mask": t.anchor_mask,
            "temporal_cond_latents": t.anchor_cond_latents[torch.randint(draws, (1,), generator=g)[0]],
            "temporal_image_embeds": t.anchor_image_embeds[0],
            "spatial_latents": t.source_pool[version, frame].unsqueeze(1),  # (b, 1, 4, h, w)
            "spatial_cond_latents": t.source_cond_latents[cond_draw, cond_frame],  # (b, 4, h, w)
            "spatial_image_embeds": t.source_image_embeds[cond_frame],  # (b, 1, E)
        }


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.cat(values) if key.startswith("spatial") else torch.stack(values)
    return out


class ReCaptureDataModule(LightningDataModule):
    """Source video -> anchor video (stage 1) -> cached latents for masked video fine-tuning.

    Args:
        video: path of the source video (mp4/mov/avi/webm/gif or a folder of images), or
            ``"example"`` for the generated example clip (exact depth; used by the offline demo).
        num_frames: clip length; 14 for SVD img2vid, 25 for img2vid-xt.
        start: first frame to read.
        stride: read every ``stride``-th frame (to cover more of a long video in one clip).
        size: long side of the frames after resizing (aspect kept, sides rounded to multiples of
            64); ``None`` keeps the video's size (it must then already be a multiple of 64).
        depth: depth estimation settings (ignored for ``video: example``, which has exact depth).
        trajectory: the requested camera trajectory (preset, amount, mode, or a file).
        anchor: anchor rendering settings (splat mode, masks, field of view, cache).
        augment: augmentations of source frames for the spatial LoRA.
        spatial_batch_size: source frames per spatial step.
        steps_per_epoch: training items per epoch (the run length is ``trainer.max_steps``).
        latent_cache_dir: where encoded latents are cached (``None``: no cache).
        output_dir: where the anchor outputs (``anchor.mp4``, ``mask.mp4``, ...) are written; the
            default ``None`` uses ``trainer.default_root_dir``.
        seed: seed of the augmentations and of the per-step sampling.
    """

    def __init__(
        self,
        video: str = EXAMPLE,
        num_frames: int = 14,
        start: int = 0,
        stride: int = 1,
        size: int | None = 1024,
        depth: DepthConfig = DepthConfig(),
        trajectory: TrajectorySpec = TrajectorySpec(),
        anchor: AnchorConfig = AnchorConfig(),
        augment: AugmentConfig = AugmentConfig(),
        spatial_batch_size: int = 2,
        steps_per_epoch: int = 100,
        latent_cache_dir: str | None = ".recapture_cache/latents",
        output_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise RecaptureError(f"data.num_frames must be >= 1, got {num_frames}")
        if spatial_batch_size < 1:
            raise RecaptureError(f"data.spatial_batch_size must be >= 1, got {spatial_batch_size}")
        self.video = str(video)
        self.num_frames = num_frames
        self.start = start
        self.stride = stride
        self.size = size
        # copies: dataclass defaults in a signature are shared objects
        self.depth = replace(depth)
        self.trajectory = replace(trajectory)
        self.anchor = replace(anchor)
        self.augment = replace(augment)
        self.spatial_batch_size = spatial_batch_size
        self.steps_per_epoch = steps_per_epoch
        self.latent_cache_dir = latent_cache_dir
        self.output_dir = output_dir
        self.seed = seed
        self.anchor_result: AnchorResult | None = None
        self.tensors: TrainingTensors | None = None
        self.fps: float = 8.0
        self._sample: tuple[torch.Tensor, float, torch.Tensor | None, torch.Tensor | None, Any] | None = None

    def use_sample(
        self,
        frames: torch.Tensor,
        fps: float,
        depth: torch.Tensor | None = None,
        K: torch.Tensor | None = None,
        trajectory: Any = None,
        depth_name: str = "exact:sample",
    ) -> ReCaptureDataModule:
        """Use an in-memory clip (e.g. a Kubric-4D sample) instead of ``video``.

        Args:
            frames: ``(T, 3, H, W)`` in [0, 1].
            fps: frame rate.
            depth: ``(T, 1, H, W)`` planar depth (exact, e.g. ground truth); ``None`` uses ``depth``
                settings.
            K: ``(3, 3)`` intrinsics in pixels; ``None`` uses ``anchor.fov_deg``.
            trajectory: a :class:`recapture.cameras.Trajectory` (scene units); ``None`` builds
                ``self.trajectory``.
            depth_name: how ``depth`` is labelled in logs and reports (e.g. ``"gt:kubric4d"``).
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise RecaptureError(f"use_sample: frames must be (T, 3, H, W), got {tuple(frames.shape)}")
        self._sample = (frames, float(fps), depth, K, trajectory)
        self._sample_depth_name = depth_name
        self.anchor_result = None
        self.tensors = None
        return self

    # ------------------------------------------------------------------ stage 1: anchor
    def load_source(self) -> tuple[torch.Tensor, float, torch.Tensor | None, torch.Tensor | None]:
        """Read the source clip: ``(frames (T, 3, H, W), fps, depth or None, K or None)``."""
        if self._sample is not None:
            return self._sample[:4]
        if self.video == EXAMPLE:
            from recapture.data.example import make_example_clip

            height, width = _example_size(self.size)
            video, depth, K = make_example_clip(num_frames=self.num_frames, height=height, width=width)
            return video.frames, video.fps, depth, K
        from recapture.io import read_video

        video = read_video(self.video, num_frames=self.num_frames, start=self.start, stride=self.stride, size=self.size)
        return video.frames, video.fps / self.stride, None, None

    def build_anchor(self) -> AnchorResult:
        """Render (or load from the cache) the anchor video for the configured trajectory."""
        if self.anchor_result is not None:
            return self.anchor_result
        frames, fps, depth, K = self.load_source()
        self.fps = fps
        if depth is not None:
            from recapture.depth import TensorDepth

            name = self._sample_depth_name if self._sample is not None else "exact:example-scene"
            estimator = TensorDepth(depth, name=name)
        else:
            estimator = make_depth_estimator(self.depth, fov_deg=self.anchor.fov_deg)
        given = self._sample[4] if self._sample is not None else None
        trajectory = given if given is not None else self.trajectory.build(frames.shape[0])
        self.anchor_result = build_anchor(frames, fps, estimator, trajectory, self.anchor, K=K)
        return self.anchor_result

    def prepare_data(self) -> None:
        self.build_anchor()

    def anchor_output_dir(self) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        if self.trainer is not None:
            return Path(self.trainer.default_root_dir)
        return Path("runs/anchor")

    # ------------------------------------------------------------------ stage 2: latents
    def setup(self, stage: str) -> None:
        if stage != "fit" or self.tensors is not None:
            return
        result = self.build_anchor()
        if self.trainer.is_global_zero:
            # the run folder gets the stage-1 outputs too (report.json is later replaced by the run's)
            from recapture.anchor import write_anchor_outputs

            write_anchor_outputs(result, self.anchor_output_dir())
        module = self.trainer.lightning_module
        components = module.components
        device = self.trainer.strategy.root_device
        key = hash_inputs(
            result.report.get("cache_key", ""),
            result.source,
            result.anchor.frames,
            result.anchor.mask,
            asdict(self.augment),
            module.components_id(),
            module.objective.noise_aug_strength,
            module.objective.mask_threshold,
            self.seed,
        )
        cache = Path(self.latent_cache_dir) / f"{key}.pt" if self.latent_cache_dir else None
        if cache is not None and cache.is_file():
            log.info("latent cache hit %s", cache)
            self.tensors = TrainingTensors.load(cache)
            return
        t0 = time.perf_counter()
        self.tensors = encode_training_tensors(
            result, components, device, self.augment, module.objective, self.seed
        )
        self.tensors.meta["encode_seconds"] = time.perf_counter() - t0
        log.info("encoded training latents in %.1f s", self.tensors.meta["encode_seconds"])
        if cache is not None:
            self.tensors.save(cache)

    def train_dataloader(self) -> DataLoader:
        if self.tensors is None:
            raise RuntimeError("ReCaptureDataModule.setup('fit') must run before train_dataloader()")
        dataset = _StepDataset(self.tensors, self.steps_per_epoch, self.spatial_batch_size, self.seed)
        return DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=_collate, num_workers=0)


def _example_size(size: int | None) -> tuple[int, int]:
    """(H, W) of the example clip for a requested long side (3:2 aspect, multiples of 64)."""
    long_side = 384 if size is None else size
    width = max(64, round(long_side / 64) * 64)
    height = max(64, round(long_side * 2 / 3 / 64) * 64)
    return height, width


@torch.no_grad()
def encode_training_tensors(
    result: AnchorResult,
    components: Any,
    device: torch.device,
    augment: AugmentConfig,
    objective: Any,
    seed: int,
) -> TrainingTensors:
    """Encode anchor and source frames once with the VAE and CLIP; return CPU tensors.

    The VAE and image encoder are moved to ``device`` for the encoding and back to the CPU after,
    so that only the UNet is resident on the accelerator during training.
    """
    from tqdm.auto import tqdm

    from recapture.adaptation import (
        encode_condition_latents,
        encode_image_embeds,
        encode_latents,
        mask_to_latent,
    )

    vae, clip = components.vae, components.image_encoder
    vae.to(device)
    clip.to(device)
    # noise augmentation is drawn where the images are (a CPU generator cannot draw CUDA tensors)
    g = torch.Generator(device=device).manual_seed(seed)
    try:
        source = result.source.to(device)
        anchor = result.anchor.frames.to(device)
        factor = components.vae_scale_factor
        anchor_latents = encode_latents(vae, anchor).cpu()
        anchor_mask = mask_to_latent(result.anchor.mask, factor, objective.mask_threshold).cpu()
        if anchor_mask.sum() == 0:
            raise RecaptureError(
                "the anchor's validity mask is empty at latent resolution on every frame: nothing to learn "
                "from. Use a smaller trajectory amount, or lower model.objective.mask_threshold."
            )
        draws = max(1, augment.condition_draws)
        # CLIP embeddings have no randomness: once; only the noise-augmented VAE latents vary per draw
        embeds_a = encode_image_embeds(clip, anchor[:1]).cpu()
        embeds_s = encode_image_embeds(clip, source).cpu()
        cond_a, cond_s = [], []
        for _ in tqdm(range(draws), desc="encode conditioning", leave=False):
            cond_a.append(encode_condition_latents(vae, anchor[:1], objective.noise_aug_strength, g).cpu())
            cond_s.append(encode_condition_latents(vae, source, objective.noise_aug_strength, g).cpu())
        aug = _augmenter(augment)
        pool = []
        # kornia draws from the global RNG: seed it here without disturbing the caller's stream
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for _ in tqdm(range(max(1, augment.pool_size)), desc="encode augmented frames", leave=False):
                pool.append(encode_latents(vae, aug(source).clamp(0, 1)).cpu())
    finally:
        vae.to("cpu")
        clip.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return TrainingTensors(
        anchor_latents=anchor_latents,
        anchor_mask=anchor_mask,
        anchor_cond_latents=torch.cat(cond_a),
        anchor_image_embeds=embeds_a,
        source_pool=torch.stack(pool),
        source_cond_latents=torch.stack(cond_s),
        source_image_embeds=embeds_s,
        meta={"latent_factor": factor, "valid_latent_fraction": float(anchor_mask.mean())},
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
