"""Data of the prior's pretraining: endless procedural clips (VAE stage) or cached latents (UNet stage).

One data module serves both stages; the stage module says which it needs
(``uses_latent_cache``):

* **clips** (VAE stage): training batches come from the endless
  :class:`~recapture.data.procedural.ProceduralVideoStream` (``split="train"``), rendered on the fly
  in DataLoader workers and sharded over ranks and workers; a resumed run starts the stream after
  the clips the finished steps consumed. Validation renders ``eval_clips`` held-out clips
  (``split="eval"``, seeds disjoint from training).
* **latents** (UNet stage): ``prepare_data`` renders a fixed pool of ``pool_clips`` training clips
  and the ``eval_clips`` held-out clips once, encodes them with the stage's frozen VAE and image
  encoder (:meth:`encode_clips` of the module: latents, noise-augmented first-frame latents, CLIP
  embeddings) and keeps them as safetensors files in ``cache_dir``, keyed by the encoders' weights
  and the data settings. Every rank then reads the files (``setup``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, IterableDataset

from recapture.data.procedural import ProceduralVideoDataset, ProceduralVideoStream
from recapture.utils import RecaptureError, atomic_path, hash_inputs

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class _VideoOnly(IterableDataset):
    """The stream's items reduced to ``video`` and ``index`` (strings do not collate usefully)."""

    def __init__(self, stream: ProceduralVideoStream) -> None:
        self.stream = stream

    def __iter__(self):  # noqa: ANN204
        for item in self.stream:
            yield {"video": item["video"], "index": item["index"]}


class _EvalClips(Dataset):
    def __init__(self, clips: ProceduralVideoDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.clips[i]
        return {"video": item["video"], "index": item["index"]}


class LatentPool(Dataset):
    """Map-style view of a latent cache file: one dict of tensors per clip.

    Items: ``latents`` ``(T, C, h, w)`` scaled clip latents, ``cond_latents`` ``(D, C, h, w)``
    noise-augmented first-frame latents (D draws), ``image_embeds`` ``(1, E)``, ``index`` ().
    """

    KEYS = ("latents", "cond_latents", "image_embeds", "index")

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = [k for k in self.KEYS if k not in tensors]
        if missing:
            raise RecaptureError(f"latent cache lacks {missing}; delete the cache file to rebuild it")
        n = {k: len(v) for k, v in tensors.items()}
        if len(set(n.values())) != 1:
            raise RecaptureError(f"latent cache tensors disagree in length: {n}; delete the cache file")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["index"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


def save_latent_cache(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write a latent cache as one safetensors file (tensors + JSON metadata), atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"meta": json.dumps(meta)})
    return path


def load_latent_cache(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_latent_cache`: ``(tensors, meta)``.

    Raises:
        RecaptureError: unreadable or incomplete file (the message says to delete it).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError) as err:
        raise RecaptureError(f"latent cache {path} is unreadable ({type(err).__name__}: {err}); delete it") from err


class PretrainDataModule(LightningDataModule):
    """Procedural clips for pretraining the prior: a stream for the VAE, a cached latent pool for the UNet.

    Args:
        num_frames: frames ``T`` per clip.
        height: frame height ``H`` (a multiple of the VAE factor).
        width: frame width ``W``.
        batch_size: clips per optimisation step and rank.
        num_workers: DataLoader workers rendering clips (VAE stage) or reading the pool.
        eval_clips: held-out clips (``split="eval"``) for validation.
        eval_batch_size: clips per validation batch.
        max_objects: at most this many moving primitives per scene.
        supersample: colour sub-pixel rays per side (2: anti-aliased frames, ~4x slower rendering).
        pool_clips: training clips encoded once for the UNet stage.
        cache_dir: folder of the latent cache files; default ``<default_root_dir>/latent_cache``.
        encode_batch_size: clips per encoder call when building the cache.
    """

    def __init__(
        self,
        num_frames: int = 8,
        height: int = 64,
        width: int = 96,
        batch_size: int = 2,
        num_workers: int = 1,
        eval_clips: int = 16,
        eval_batch_size: int = 4,
        max_objects: int = 5,
        supersample: int = 1,
        pool_clips: int = 2048,
        cache_dir: str | None = None,
        encode_batch_size: int = 16,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_clips", eval_clips), ("pool_clips", pool_clips),
                            ("eval_batch_size", eval_batch_size), ("encode_batch_size", encode_batch_size)):
            if value < 1:
                raise RecaptureError(f"data.{name}={value} must be >= 1")
        if num_workers < 0:
            raise RecaptureError(f"data.num_workers={num_workers} must be >= 0")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_clips, self.eval_batch_size = eval_clips, eval_batch_size
        self.max_objects, self.supersample = max_objects, supersample
        self.pool_clips, self.cache_dir, self.encode_batch_size = pool_clips, cache_dir, encode_batch_size
        self.pools: dict[str, LatentPool] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ clips
    def clip_settings(self) -> dict[str, Any]:
        """The rendering settings (part of the cache key and of the model card)."""
        return {"num_frames": self.num_frames, "height": self.height, "width": self.width,
                "max_objects": self.max_objects, "supersample": self.supersample}

    def clips(self, split: str, num_clips: int) -> ProceduralVideoDataset:
        """Clips ``0..num_clips-1`` of ``split`` (deterministic)."""
        return ProceduralVideoDataset(
            split, num_clips, self.num_frames, self.height, self.width, self.supersample,
            with_geometry=False, with_target=False, max_objects=self.max_objects,
        )

    def reference_video(self, num_clips: int) -> torch.Tensor:
        """The first ``num_clips`` training clips, ``(N, T, 3, H, W)`` in [0, 1] (e.g. to fit the latent scale)."""
        clips = self.clips("train", num_clips)
        return torch.stack([clips[i]["video"] for i in range(num_clips)])

    def eval_video(self, num_clips: int) -> torch.Tensor:
        """The first ``num_clips`` held-out clips, ``(N, T, 3, H, W)`` in [0, 1]."""
        clips = self.clips("eval", num_clips)
        return torch.stack([clips[i]["video"] for i in range(num_clips)])

    def _module(self) -> Any:
        if self.trainer is None:
            raise RuntimeError("PretrainDataModule needs a trainer (use it through `recapture pretrain`)")
        return self.trainer.lightning_module

    def _uses_latents(self) -> bool:
        return bool(getattr(self._module(), "uses_latent_cache", False))

    def consumed_clips(self) -> int:
        """Training clips the finished optimisation steps consumed on all ranks (where a resumed stream starts)."""
        trainer = self.trainer
        return trainer.global_step * self.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    # ------------------------------------------------------------------ latent cache (UNet stage)
    def cache_paths(self) -> dict[str, Path]:
        """``{"train": file, "eval": file}`` of the latent cache for the current stage module."""
        module = self._module()
        key = hash_inputs(CACHE_FORMAT, module.cache_id(), self.clip_settings(), self.pool_clips, self.eval_clips)
        root = Path(self.cache_dir) if self.cache_dir else Path(self.trainer.default_root_dir) / "latent_cache"
        return {split: root / f"{split}-{key}.safetensors" for split in ("train", "eval")}

    def prepare_data(self) -> None:
        if not self._uses_latents():
            return
        module = self._module()
        device = self.trainer.strategy.root_device
        for split, path in self.cache_paths().items():
            if path.is_file():
                log.info("latent cache hit: %s", path)
                continue
            n = self.pool_clips if split == "train" else self.eval_clips
            t0 = time.perf_counter()
            tensors = self._encode_split(module, split, n, device)
            meta = {"split": split, "clips": n, **self.clip_settings(), "encoder": module.cache_id(),
                    "seconds": round(time.perf_counter() - t0, 1)}
            save_latent_cache(path, tensors, meta)
            self.timings[f"encode_{split}_s"] = time.perf_counter() - t0
            log.info("latent cache: encoded %d %s clips in %.1f s -> %s", n, split, meta["seconds"], path)

    def _encode_split(self, module: Any, split: str, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        loader = DataLoader(_EvalClips(self.clips(split, n)), batch_size=self.encode_batch_size,
                            num_workers=self.num_workers, shuffle=False)
        parts: dict[str, list[torch.Tensor]] = {}
        done, t0 = 0, time.perf_counter()
        for batch in loader:
            encoded = module.encode_clips(batch["video"], batch["index"], device)
            encoded["index"] = batch["index"].long()
            for k, v in encoded.items():
                parts.setdefault(k, []).append(v.cpu())
            done += len(batch["index"])
            if done % (self.encode_batch_size * 16) == 0 or done == n:
                log.info("latent cache (%s): %d/%d clips, %.1f s", split, done, n, time.perf_counter() - t0)
        return {k: torch.cat(v) for k, v in parts.items()}

    def setup(self, stage: str) -> None:
        if stage not in ("fit", "validate") or not self._uses_latents() or self.pools:
            return
        for split, path in self.cache_paths().items():
            if not path.is_file():
                raise RecaptureError(f"latent cache {path} is missing; prepare_data should have written it")
            tensors, _ = load_latent_cache(path)
            self.pools[split] = LatentPool(tensors)
        if len(self.pools["train"]) < self.batch_size:
            raise RecaptureError(
                f"data.pool_clips={len(self.pools['train'])} is smaller than data.batch_size={self.batch_size}"
            )

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        if self._uses_latents():
            return DataLoader(self.pools["train"], batch_size=self.batch_size, shuffle=True, drop_last=True,
                              num_workers=0)
        start = self.consumed_clips()
        if start:
            log.info("resuming the clip stream after %d consumed training clips", start)
        stream = ProceduralVideoStream(
            "train", self.num_frames, self.height, self.width, self.supersample,
            max_objects=self.max_objects, start_index=start,
            rank=self.trainer.global_rank, world_size=self.trainer.world_size,  # explicit: workers may be spawned
        )
        return DataLoader(_VideoOnly(stream), batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, prefetch_factor=2 if self.num_workers else None)

    def val_dataloader(self) -> DataLoader:
        if self._uses_latents():
            return DataLoader(self.pools["eval"], batch_size=self.eval_batch_size, shuffle=False, num_workers=0)
        return DataLoader(_EvalClips(self.clips("eval", self.eval_clips)), batch_size=self.eval_batch_size,
                          shuffle=False, num_workers=0)
