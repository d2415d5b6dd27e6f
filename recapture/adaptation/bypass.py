"""Temporal bypass: make the SVD UNet purely spatial (per frame) for spatial-LoRA steps.

Every spatio-temporal block of the SVD UNet mixes a spatial and a temporal branch with an
``AlphaBlender`` (merge strategy ``learned_with_images``): ``alpha * spatial + (1 - alpha) * temporal``
where ``alpha`` is 1 wherever ``image_only_indicator`` is set. This is SVD's own image-only path,
but the UNet always builds the indicator as zeros. The bypass sets it to ones with forward
pre-hooks on every blender, so each frame's output depends on that frame alone and the temporal
layers (and their LoRA) receive exactly zero gradient. ``num_frames=1`` alone is NOT a bypass: the
temporal layers still transform the features.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
from diffusers.models.resnet import AlphaBlender

__all__ = ["temporal_bypass"]


def _is_blender(module: nn.Module) -> bool:
    return isinstance(module, AlphaBlender) and module.merge_strategy == "learned_with_images"


def _force_image_only(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    """Pre-hook: replace ``image_only_indicator`` (3rd argument of AlphaBlender.forward) with ones."""
    args = tuple(args)
    if len(args) >= 3:
        indicator = args[2]
        args = args[:2] + (torch.ones_like(indicator),) + args[3:]
    else:
        indicator = kwargs.get("image_only_indicator")
        if indicator is None:
            raise RuntimeError("AlphaBlender called without image_only_indicator; the bypass cannot apply")
        kwargs = {**kwargs, "image_only_indicator": torch.ones_like(indicator)}
    return args, kwargs


def _passthrough(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden_states


@contextmanager
def temporal_bypass(unet: nn.Module, skip_compute: bool = False) -> Iterator[nn.Module]:
    """Inside the block, the UNet's blenders take the spatial branch only (frames are independent).

    Works with gradient checkpointing and PEFT adapters; hooks and overrides are removed on exit,
    also after an exception.

    Args:
        unet: an SVD ``UNetSpatioTemporalConditionModel``.
        skip_compute: also skip the temporal blocks' compute (temporal transformer blocks and
            temporal resnets return their input); the output is bitwise unchanged, only faster.
            The skipped parameters then get no gradient at all (``grad is None``).

    Yields:
        ``unet``.

    Example::

        with temporal_bypass(unet):
            out = unet(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample
    """
    blenders = [m for m in unet.modules() if _is_blender(m)]
    if not blenders:
        raise ValueError(f"{type(unet).__name__} has no learned_with_images AlphaBlender; is it an SVD UNet?")
    handles = [m.register_forward_pre_hook(_force_image_only, with_kwargs=True) for m in blenders]
    skipped: list[nn.Module] = []
    try:
        if skip_compute:
            for name, module in unet.named_modules():
                leaf = name.rsplit(".", 1)[-1]
                parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
                if leaf == "temporal_res_block" or parent == "temporal_transformer_blocks":
                    module.forward = _passthrough  # instance attribute shadows the class method
                    skipped.append(module)
        yield unet
    finally:
        for handle in handles:
            handle.remove()
        for module in skipped:
            del module.forward
