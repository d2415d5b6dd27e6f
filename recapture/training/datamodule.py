"""LightningDataModule: source video -> anchor video (cached) -> encoded training tensors (cached) -> batches.

``prepare_data`` renders the anchor (stage 1, cached on disk by :func:`recapture.anchor.build_anchor`).
``setup`` encodes, once, everything the two kinds of training step need
(:func:`recapture.adaptation.encode_training_tensors`: VAE latents, latent masks, CLIP embeddings,
noise-augmented conditioning draws, a pool of augmented source frames), caches the tensors on disk
as safetensors, and leaves only the UNet on the accelerator during training.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from recapture.adaptation.encoding import AugmentConfig, TrainingTensors
from recapture.anchor import AnchorConfig, AnchorResult, build_anchor
from recapture.cameras import TrajectorySpec
from recapture.depth import DepthSource, PriorDepthSource
from recapture.io.resize import _check_size
from recapture.utils import RecaptureError, check_video, hash_inputs

log = logging.getLogger(__name__)

EXAMPLE = "example"


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


class _StepSampler(torch.utils.data.Sampler[int]):
    """Indices ``0..n-1`` of an epoch, starting at ``start`` once (a resumed epoch); counts what it handed out."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.start = 0  # where the next epoch begins (set by a resume, then back to 0)
        self.position = 0  # indices handed out in the current epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # noqa: ANN204
        start, self.start = self.start, 0
        self.position = start
        for index in range(start, self.n):
            self.position = index + 1
            yield index


class _StepLoader(DataLoader):
    """The training loader, resumable: a checkpoint records how far the epoch got, a resume continues there.

    Lightning saves :meth:`state_dict` in its checkpoints and calls :meth:`load_state_dict` on resume
    (a loader without them restarts the epoch, so a resumed run would see other batches than an
    uninterrupted one). Items are drawn from seeds of their index, so the same index is the same batch.
    """

    def __init__(self, dataset: _StepDataset, **kwargs: Any) -> None:
        # Lightning re-creates the loader with every DataLoader argument when it injects a distributed
        # sampler (several devices): then the epoch position is that sampler's, and not resumable here.
        sampler = kwargs.pop("sampler", None) or _StepSampler(len(dataset))
        self.steps = sampler if isinstance(sampler, _StepSampler) else None
        # the loader's own seed (unused: no workers) from a private generator, see __iter__
        settings: dict[str, Any] = {"batch_size": 1, "collate_fn": _collate, "num_workers": 0,
                                    "generator": torch.Generator()}
        settings.update(kwargs)
        super().__init__(dataset, sampler=sampler, **settings)

    def __iter__(self):  # noqa: ANN204
        if self.steps is None or self.steps.start == 0:
            # The draw a stock DataLoader makes from the global RNG at each epoch start, made here only
            # when an epoch starts at its beginning: an uninterrupted run's noise stream is the one
            # earlier versions drew, and a run resumed mid-epoch (its RNG state restored from the
            # checkpoint) makes no draw the uninterrupted run did not make.
            torch.empty((), dtype=torch.int64).random_()
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        return {} if self.steps is None else {"position": self.steps.position, "length": self.steps.n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if self.steps is None or not state:
            return
        if state.get("length") != self.steps.n:
            log.warning("the checkpoint's epoch had %s steps, this run's %d (data.steps_per_epoch changed): the "
                        "resumed epoch starts at its beginning", state.get("length"), self.steps.n)
            return
        position = int(state.get("position", 0))
        self.steps.start = position if 0 <= position < self.steps.n else 0  # a finished epoch: the next one


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
        size: long side of the frames (the width of a landscape video), rounded to a multiple of 64;
            the short side is scaled by the same factor and rounded to the nearest multiple of 64
            (halves up, at least 64), and the picture is scaled without distortion to cover that size,
            the overflow being centre-cropped (or padded, see ``resize``): 1280x720 at 512 -> 512x320
            with 57 columns cut. A smaller source is enlarged, with a warning naming the factor.
            ``None`` keeps the video's size (it must then already be a multiple of 64). A pair
            ``[H, W]`` gives exactly that size, not rounded (for a small prior trained at a size that
            is not a multiple of 64, e.g. ``[64, 96]`` for ``recapture-tiny``).
        resize: ``crop`` (default): scale to cover the size and cut the overflow equally from both
            ends; ``pad``: scale to fit inside and fill the rest with black.
        depth: where depth comes from: a depth backend class (``TransformersDepthSource``,
            ``FileDepthSource``, the default weight-free ``PriorDepthSource``, or any
            ``recapture.depth.DepthSource`` subclass), e.g. ``--data.depth FileDepthSource
            --data.depth.path depth.npy``; ignored for ``video: example``, which has exact depth.
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
        size: int | tuple[int, int] | None = 1024,
        resize: Literal["crop", "pad"] = "crop",
        depth: DepthSource = PriorDepthSource(),
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
        if steps_per_epoch < 1:
            raise RecaptureError(f"data.steps_per_epoch must be >= 1 (training steps drawn per epoch), got "
                                 f"{steps_per_epoch}; the step count is trainer.max_steps")
        try:
            _check_size(size, resize, 64)
        except RecaptureError as err:
            raise RecaptureError(f"data.{err}") from None
        self.video = str(video)
        self.num_frames = num_frames
        self.start = start
        self.stride = stride
        self.size = size
        self.resize = resize
        # copies: dataclass defaults in a signature are shared objects
        self.depth = copy.deepcopy(depth)  # any DepthSource subclass, dataclass or not
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
        self.timings: dict[str, Any] = {}  # this run's encoding time and latent-cache status
        self.started_at: float | None = None  # wall clock when this run's stage 1 began
        self.sample: SourceClip | None = None  # an in-memory clip given by use_sample (the benchmark's)
        self._ground_truth: torch.Tensor | None = None

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
        check_video(frames, "use_sample: frames")
        self.sample = SourceClip(frames, float(fps), depth, K, trajectory, depth_name)
        self.anchor_result = None
        self.tensors = None
        self.timings = {}
        return self

    def needs_depth_model(self) -> bool:
        """Whether stage 1 loads depth weights (``depth.needs_weights``; not for the example or a sample with depth)."""
        if self.sample is not None:
            return self.sample.depth is None and self.depth.needs_weights
        return self.video != EXAMPLE and self.depth.needs_weights

    # ------------------------------------------------------------------ stage 1: anchor
    def load_source(self) -> tuple[torch.Tensor, float, torch.Tensor | None, torch.Tensor | None]:
        """Read the source clip: ``(frames (T, 3, H, W), fps, depth or None, K or None)``."""
        if self.sample is not None:
            return self.sample.frames, self.sample.fps, self.sample.depth, self.sample.K
        if self.video == EXAMPLE:
            from recapture.data.example import make_example_clip

            height, width = _example_size(self.size)
            video, depth, K = make_example_clip(num_frames=self.num_frames, height=height, width=width)
            return video.frames, video.fps, depth, K
        from recapture.io import cut_warning, detect_cuts, read_video

        video = read_video(self.video, num_frames=self.num_frames, start=self.start, stride=self.stride,
                           size=self.size, resize=self.resize)
        message = cut_warning(detect_cuts(video.frames), video.num_frames, start=self.start, stride=self.stride,
                              total_frames=video.source_num_frames, path=self.video)
        if message:
            log.warning(message)
        return video.frames, video.fps / self.stride, None, None

    def build_anchor(self, device: torch.device | str | None = None) -> AnchorResult:
        """Render (or load from the cache) the anchor video for the configured trajectory.

        Args:
            device: where depth is estimated when ``depth.device`` is not set (the run's device:
                ``prepare_data`` passes the trainer's); None means the CPU.
        """
        if self.anchor_result is not None:
            return self.anchor_result
        frames, fps, depth, K = self.load_source()
        if depth is not None:
            from recapture.depth import TensorDepth

            name = self.sample.depth_name if self.sample is not None else "exact:example-scene"
            estimator = TensorDepth(depth, name=name)
        else:
            estimator = self.depth.build(fov_deg=self.anchor.fov_deg, device=device)
        given = self.sample.trajectory if self.sample is not None else None
        trajectory = given if given is not None else self.trajectory.build(frames.shape[0])
        self.anchor_result = build_anchor(frames, fps, estimator, trajectory, self.anchor, K=K)
        return self.anchor_result

    def ground_truth(self) -> torch.Tensor | None:
        """The exact novel view ``(T, 3, H, W)`` for the generated example clip; None for a real video.

        The example scene is ray-cast from the anchor's target cameras, so a run on ``video: example``
        can be scored against the truth (``MetricsCallback``: ``truth_psnr``, ``truth_psnr_holes``).
        """
        if self.video != EXAMPLE or self.sample is not None:
            return None
        if self._ground_truth is None:
            from recapture.data.example import render_example_view

            anchor = self.build_anchor()
            height, width = anchor.source.shape[-2:]
            self._ground_truth = render_example_view(anchor.c2w, anchor.K, height, width)
        return self._ground_truth

    @property
    def fps(self) -> float:
        """Frame rate of the source clip (known once the anchor is built)."""
        if self.anchor_result is None:
            raise RuntimeError("ReCaptureDataModule.fps is known after build_anchor() (prepare_data)")
        return self.anchor_result.fps

    @property
    def video_fps(self) -> float:
        """Frame rate of the output videos: the source's, slowed so the clip lasts >= 1.5 s."""
        from recapture.io import watchable_fps

        return watchable_fps(self.fps, self.anchor_result.anchor.frames.shape[0])

    def prepare_data(self) -> None:
        self.started_at = time.time()
        self.build_anchor(device=self.trainer.strategy.root_device if self.trainer is not None else None)

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
        # the model's side of encoding, declared (encoders, their identity, the loss's mask policy)
        encoder = self.trainer.lightning_module.training_encoder()
        device = self.trainer.strategy.root_device
        key = hash_inputs(
            result.report.get("cache_key", ""),
            result.source,
            result.anchor.frames,
            result.anchor.mask,
            asdict(self.augment),
            *encoder.cache_key_parts(),
            self.seed,
        )
        cache = Path(self.latent_cache_dir) / f"{key}.safetensors" if self.latent_cache_dir else None
        t0 = time.perf_counter()
        if cache is not None:
            # None when absent or bad (a bad entry is checksum-verified, reported, removed, re-encoded)
            self.tensors = TrainingTensors.load_cached(cache)
            if self.tensors is not None:
                self.timings = {"encode_s": time.perf_counter() - t0, "latent_cache": "hit"}
                log.info("latent cache hit %s", cache)
                return
        self.tensors = encoder.encode(result.source, result.anchor.frames, result.anchor.mask, device, self.augment,
                                      self.seed)
        self.timings = {"encode_s": time.perf_counter() - t0, "latent_cache": "miss" if cache else "off"}
        log.info("encoded training latents in %.1f s", self.timings["encode_s"])
        if cache is not None:
            self.tensors.save_cached(cache)  # and the cache folder kept under its size cap

    def train_dataloader(self) -> DataLoader:
        if self.tensors is None:
            raise RuntimeError("ReCaptureDataModule.setup('fit') must run before train_dataloader()")
        # page-locked batches on CUDA: Lightning's copy to the device (non_blocking) then overlaps the step
        trainer = self.trainer
        cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
        dataset = _StepDataset(self.tensors, self.steps_per_epoch, self.spatial_batch_size, self.seed)
        return _StepLoader(dataset, pin_memory=cuda)


@dataclass
class SourceClip:
    """An in-memory source clip (``ReCaptureDataModule.use_sample``), e.g. a Kubric-4D evaluation sample.

    Attributes:
        frames: ``(T, 3, H, W)`` in [0, 1].
        fps: frame rate.
        depth: ``(T, 1, H, W)`` planar depth, or None to estimate it with ``data.depth``.
        K: ``(3, 3)`` intrinsics in pixels, or None for ``anchor.fov_deg``.
        trajectory: the target :class:`~recapture.cameras.Trajectory`, or None to build ``data.trajectory``.
        depth_name: how ``depth`` is labelled in logs and reports.
    """

    frames: torch.Tensor
    fps: float
    depth: torch.Tensor | None = None
    K: torch.Tensor | None = None
    trajectory: Any = None
    depth_name: str = "exact:sample"


def _example_size(size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the example clip: a pair is used as given; a long side gives 3:2, multiples of 64."""
    if size is not None and not isinstance(size, int):
        return int(size[0]), int(size[1])
    long_side = 384 if size is None else size
    width = max(64, round(long_side / 64) * 64)
    height = max(64, round(long_side * 2 / 3 / 64) * 64)
    return height, width
