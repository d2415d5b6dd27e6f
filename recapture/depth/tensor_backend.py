"""Depth already in memory (synthetic scenes, exact depth, notebooks)."""

from __future__ import annotations

from torch import Tensor

from recapture.depth.base import check_depth, check_frames
from recapture.utils import hash_inputs

__all__ = ["TensorDepth"]


class TensorDepth:
    """Return a fixed depth tensor for the frames it was made for.

    Args:
        depth: planar depth ``(T, 1, H, W)``, finite and > 0.
        name: label for logs and reports, e.g. ``"exact:example-scene"``.
        is_prior: set True if the tensor is a guess rather than measured/estimated depth.
    """

    def __init__(self, depth: Tensor, name: str = "tensor", is_prior: bool = False) -> None:
        check_depth(depth)
        self.depth, self.name, self.is_prior = depth, name, is_prior

    @property
    def cache_token(self) -> object:
        return {"name": self.name, "depth": hash_inputs(self.depth)}

    def __call__(self, frames: Tensor) -> Tensor:
        """Return the stored depth ``(T, 1, H, W)`` after checking it matches ``frames`` ``(T, 3, H, W)``."""
        check_frames(frames)
        check_depth(self.depth, frames)
        return self.depth.to(frames.device)
