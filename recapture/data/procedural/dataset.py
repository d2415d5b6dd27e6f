"""Seeded procedural clips with disjoint train/eval splits, and the ``torch.utils.data`` datasets.

A clip is a scene (:func:`~recapture.data.procedural.sample_scene`) plus a source camera path
(:func:`~recapture.data.procedural.sample_camera_path`) and, for evaluation, a target path of the
same scene relative to the source (:func:`~recapture.data.procedural.relative_path`), so the
ground-truth novel view is an exact render. Everything is a function of ``(split, index)``:

``seed = mix63(2 * index + split_bit)`` where ``mix63`` is the SplitMix64 finaliser computed modulo
``2**63`` (xor-shifts and odd multipliers: a bijection of 63-bit integers, so seeds fit an int64
and collate into tensors); ``2 * index + split_bit`` is injective in ``(split, index)``, so no train
index ever gets an eval seed (for every ``index < 2**62``). The scene, the source path and the target path
draw from three independent streams of that seed, so asking for the target does not change the
source clip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from recapture.data.procedural.generator import sample_scene
from recapture.data.procedural.paths import CAMERA_MOTIONS, CameraPath, relative_path, sample_camera_path
from recapture.data.procedural.raycast import render
from recapture.data.procedural.scene import Scene
from recapture.utils import RecaptureError

__all__ = [
    "SPLITS",
    "ProceduralClip",
    "ProceduralVideoDataset",
    "ProceduralVideoStream",
    "clip_seed",
    "make_clip",
    "render_path",
]

Split = Literal["train", "eval"]
SPLITS: dict[str, int] = {"train": 0, "eval": 1}
_MASK = (1 << 63) - 1


def clip_seed(split: str, index: int) -> int:
    """The scene seed of clip ``index`` of ``split`` (``"train"`` or ``"eval"``); splits never share one.

    Args:
        split: ``"train"`` or ``"eval"``.
        index: ``0 <= index < 2**62``.

    Returns:
        A seed in ``[0, 2**63)`` (a bijective mix of ``2 * index + split_bit``: distinct for distinct inputs).
    """
    if split not in SPLITS:
        raise RecaptureError(f"split={split!r} must be one of {sorted(SPLITS)}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < 1 << 62:
        raise RecaptureError(f"index={index!r} must be an integer in [0, 2**62)")
    z = (2 * int(index) + SPLITS[split] + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK  # odd multipliers: invertible mod 2**63
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


@dataclass
class ProceduralClip:
    """One clip's content: the scene and its camera paths (not rendered yet)."""

    split: str
    index: int
    seed: int
    scene: Scene
    source: CameraPath
    target: CameraPath | None = None
    relative_c2w: Tensor | None = None  # (T, 4, 4) float64: target = source @ relative, metres


def _check_size(num_frames: int, size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise RecaptureError(f"num_frames={num_frames!r} must be a positive integer")
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 8 for s in size):
        raise RecaptureError(f"size={size!r} must be (H, W) integers >= 8, e.g. (64, 96)")
    return int(size[0]), int(size[1])


def make_clip(
    split: str,
    index: int,
    num_frames: int = 8,
    size: tuple[int, int] = (64, 96),
    with_target: bool = False,
    max_objects: int = 5,
    camera_motions: tuple[str, ...] = CAMERA_MOTIONS,
) -> ProceduralClip:
    """Sample clip ``index`` of ``split`` (deterministic; see the module docstring for the seeds).

    Args:
        split: ``"train"`` or ``"eval"``.
        index: clip index (``>= 0``).
        num_frames: frames ``T``.
        size: ``(H, W)`` (for the intrinsics).
        with_target: also draw a target path relative to the source.
        max_objects: at most this many primitives.
        camera_motions: source camera moves to draw from (``"static"``, ``"preset"``, ``"smooth"``).

    Returns:
        A :class:`ProceduralClip`.
    """
    size = _check_size(num_frames, size)
    seed = clip_seed(split, index)
    scene = sample_scene(seed, num_frames, max_objects=max_objects)
    source = sample_camera_path(
        scene, np.random.default_rng([seed, 1]), num_frames, size, tuple(camera_motions)
    )
    clip = ProceduralClip(split, int(index), seed, scene, source)
    if with_target:
        clip.target, clip.relative_c2w = relative_path(scene, source, np.random.default_rng([seed, 2]))
    return clip


def render_path(
    scene: Scene, path: CameraPath, size: tuple[int, int], supersample: int = 1
) -> dict[str, Tensor]:
    """Render ``path`` (camera ``t`` at scene frame ``t``): ``video`` ``(T, 3, H, W)``, ``depth`` ``(T, 1, H, W)``.

    Both float32; depth is the exact planar z (float32 rounding).
    """
    out = render(scene, range(path.num_frames), path.c2w, path.K, size, supersample)
    return {"video": out["rgb"], "depth": out["depth"][:, None]}


def _item(
    clip: ProceduralClip, size: tuple[int, int], supersample: int, with_geometry: bool
) -> dict[str, Any]:
    item: dict[str, Any] = {"index": clip.index, "seed": clip.seed, "camera": clip.source.name}
    paths = [("", clip.source)] + ([("target_", clip.target)] if clip.target is not None else [])
    for prefix, path in paths:
        out = render_path(clip.scene, path, size, supersample)
        item[prefix + "video"] = out["video"]
        if with_geometry:
            item[prefix + "depth"] = out["depth"]
            item[prefix + "K"] = path.K.float()
            item[prefix + "c2w"] = path.c2w.float()
    if clip.target is not None:
        item["target_camera"] = clip.target.name
        item["relative_c2w"] = clip.relative_c2w.float()
    return item


class _ClipSettings:
    def __init__(
        self,
        split: Split,
        num_frames: int,
        height: int,
        width: int,
        supersample: int,
        with_geometry: bool,
        with_target: bool,
        max_objects: int,
        camera_motions: tuple[str, ...],
    ) -> None:
        if split not in SPLITS:
            raise RecaptureError(f"split={split!r} must be one of {sorted(SPLITS)}")
        self.size = _check_size(num_frames, (height, width))
        if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
            raise RecaptureError(f"supersample={supersample!r} must be an integer >= 1")
        self.split, self.num_frames, self.supersample = split, num_frames, supersample
        self.with_geometry, self.with_target = with_geometry, with_target
        self.max_objects, self.camera_motions = max_objects, tuple(camera_motions)

    def clip(self, index: int) -> ProceduralClip:
        """The (unrendered) clip ``index``."""
        return make_clip(
            self.split,
            index,
            self.num_frames,
            self.size,
            self.with_target,
            self.max_objects,
            self.camera_motions,
        )

    def item(self, index: int) -> dict[str, Any]:
        """Render clip ``index`` into a sample dict (see the dataset classes)."""
        return _item(self.clip(index), self.size, self.supersample, self.with_geometry)


class ProceduralVideoDataset(_ClipSettings, Dataset):
    """Map-style procedural clips ``0..num_clips-1`` of a split (deterministic per index): evaluation.

    Each item is a dict: ``video`` ``(T, 3, H, W)`` float32 in [0, 1], ``index``, ``seed``,
    ``camera`` (the move's name); with ``with_geometry`` also ``depth`` ``(T, 1, H, W)`` (planar z,
    metres), ``K`` ``(T, 3, 3)`` and ``c2w`` ``(T, 4, 4)`` (OpenCV camera-to-world, Z-up world);
    with ``with_target`` also ``target_video`` (and ``target_depth`` / ``target_K`` / ``target_c2w``),
    ``target_camera`` and ``relative_c2w`` ``(T, 4, 4)`` with ``target_c2w = c2w @ relative_c2w``.

    Args:
        split: ``"eval"`` (default) or ``"train"``.
        num_clips: length of the dataset.
        num_frames: frames ``T`` per clip.
        height: ``H``.
        width: ``W``.
        supersample: colour sub-pixel rays per side (2 = anti-aliased, about 4x slower).
        with_geometry: also return depth and cameras.
        with_target: also render a target camera path of the same scene (exact novel views).
        max_objects: at most this many moving primitives per scene (1..8).
        camera_motions: source camera moves to draw from: ``"static"``, ``"preset"``, ``"smooth"``.
    """

    def __init__(
        self,
        split: Split = "eval",
        num_clips: int = 256,
        num_frames: int = 8,
        height: int = 64,
        width: int = 96,
        supersample: int = 1,
        with_geometry: bool = True,
        with_target: bool = True,
        max_objects: int = 5,
        camera_motions: tuple[str, ...] = CAMERA_MOTIONS,
    ) -> None:
        super().__init__(
            split,
            num_frames,
            height,
            width,
            supersample,
            with_geometry,
            with_target,
            max_objects,
            camera_motions,
        )
        if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
            raise RecaptureError(f"num_clips={num_clips!r} must be a positive integer")
        self.num_clips = num_clips

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"index {index} out of range for {self.num_clips} clips")
        return self.item(index)


class ProceduralVideoStream(_ClipSettings, IterableDataset):
    """Endless procedural clips of a split, rendered on the fly: training data for a video prior.

    Yields the dicts of :class:`ProceduralVideoDataset` for indices ``start_index + k`` shared out
    over distributed ranks and DataLoader workers (each index exactly once across all of them, so
    every clip is deterministic and a run resumes by passing the number of clips already seen).

    Args:
        split: ``"train"`` (default) or ``"eval"``.
        num_frames: frames ``T`` per clip.
        height: ``H``.
        width: ``W``.
        supersample: colour sub-pixel rays per side.
        with_geometry: also yield depth and cameras.
        with_target: also render a target path.
        max_objects: at most this many moving primitives per scene (1..8).
        camera_motions: source camera moves to draw from.
        start_index: first clip index.
        rank: this process's rank (None: ``torch.distributed``'s when initialised, else 0).
        world_size: number of ranks (None: likewise, else 1).
    """

    def __init__(
        self,
        split: Split = "train",
        num_frames: int = 8,
        height: int = 64,
        width: int = 96,
        supersample: int = 1,
        with_geometry: bool = False,
        with_target: bool = False,
        max_objects: int = 5,
        camera_motions: tuple[str, ...] = CAMERA_MOTIONS,
        start_index: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            split,
            num_frames,
            height,
            width,
            supersample,
            with_geometry,
            with_target,
            max_objects,
            camera_motions,
        )
        if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
            raise RecaptureError(f"start_index={start_index!r} must be a non-negative integer")
        self.start_index, self.rank, self.world_size = start_index, rank, world_size

    def _shard(self) -> tuple[int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            dist = torch.distributed
            ready = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if ready else 0) if rank is None else rank
            world = (dist.get_world_size() if ready else 1) if world is None else world
        if not 0 <= rank < world:
            raise RecaptureError(f"rank={rank} must be in [0, world_size={world})")
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return rank * workers + worker, world * workers

    def indices(self) -> Iterator[int]:
        """The clip indices this rank/worker yields, forever."""
        offset, stride = self._shard()
        index = self.start_index + offset
        while True:
            yield index
            index += stride

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in self.indices():
            yield self.item(index)
