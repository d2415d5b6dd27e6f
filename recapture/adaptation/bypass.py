"""Temporal bypass: make the SVD UNet purely spatial (per frame) for spatial-LoRA steps.

Every spatio-temporal block of the SVD UNet mixes a spatial and a temporal branch with an
``AlphaBlender`` (merge strategy ``learned_with_images``): ``alpha * spatial + (1 - alpha) * temporal``
where ``alpha`` is 1 wherever ``image_only_indicator`` is set. This is SVD's own image-only path,
but the UNet always builds the indicator as zeros. The bypass hands every top-level block
(``down_blocks.*``, ``mid_block``, ``up_blocks.*``) an indicator of ones instead, through forward
pre-hooks, so each frame's output depends on that frame alone and the temporal layers (and their
LoRA) receive exactly zero gradient. ``num_frames=1`` alone is NOT a bypass: the temporal layers
still transform the features.

Gradient checkpointing: the blocks pass the indicator on to their checkpointed resnets as an
*input*, so the ones tensor is saved with the checkpoint and the recomputation in the backward
pass is bypassed too, even when ``backward()`` runs after the context has closed (as Lightning
runs it, after ``training_step`` returns). ``skip_compute`` is different: it replaces the temporal
modules' ``forward`` while the context is open, so with gradient checkpointing the backward pass
must run inside the context as well (:class:`recapture.training.ReCaptureModule` re-enters the
bypass around its ``backward``); otherwise torch raises a ``CheckpointError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from diffusers.models.resnet import AlphaBlender

__all__ = ["BypassTargets", "bypass_targets", "temporal_bypass"]


def _has_blender(module: nn.Module) -> bool:
    return any(isinstance(m, AlphaBlender) and m.merge_strategy == "learned_with_images" for m in module.modules())


def _top_level_blocks(unet: nn.Module) -> list[nn.Module]:
    """The UNet's blocks that receive ``image_only_indicator`` from its forward (they hold every blender)."""
    blocks: list[nn.Module] = []
    for name in ("down_blocks", "up_blocks"):
        blocks.extend(getattr(unet, name, None) or [])
    mid = getattr(unet, "mid_block", None)
    if mid is not None:
        blocks.append(mid)
    return [b for b in blocks if _has_blender(b)]


def _force_image_only(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    """Pre-hook: replace the ``image_only_indicator`` keyword argument with ones."""
    indicator = kwargs.get("image_only_indicator")
    if indicator is None:
        raise RuntimeError(
            f"{type(module).__name__} was called without image_only_indicator; the temporal bypass cannot apply"
        )
    return args, {**kwargs, "image_only_indicator": torch.ones_like(indicator)}


def _passthrough(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden_states


def _temporal_modules(unet: nn.Module) -> list[nn.Module]:
    """Temporal resnets and temporal transformer blocks: the compute ``skip_compute`` leaves out."""
    found = []
    for name, module in unet.named_modules():
        parts = name.split(".")
        if parts[-1] == "temporal_res_block" or (len(parts) >= 2 and parts[-2] == "temporal_transformer_blocks"):
            found.append(module)
    return found


class BypassTargets(NamedTuple):
    """The modules :func:`temporal_bypass` touches, found once per UNet (finding them walks every module).

    Attributes:
        blocks: the top-level blocks that get the image-only indicator.
        temporal: the temporal resnets and transformer blocks that ``skip_compute`` leaves out.
    """

    blocks: tuple[nn.Module, ...]
    temporal: tuple[nn.Module, ...]


def bypass_targets(unet: nn.Module) -> BypassTargets:
    """Find the blocks and temporal modules of ``unet`` for :func:`temporal_bypass`.

    Compute it once and pass it to every bypass of a training loop: a UNet's module tree does not
    change when adapters are added, moved to a device or checkpointed (those wrap leaf layers).

    Raises:
        ValueError: ``unet`` has no ``learned_with_images`` blender (not an SVD UNet).
    """
    blocks = _top_level_blocks(unet)
    if not blocks:
        raise ValueError(f"{type(unet).__name__} has no learned_with_images AlphaBlender; is it an SVD UNet?")
    return BypassTargets(tuple(blocks), tuple(_temporal_modules(unet)))


@contextmanager
def temporal_bypass(
    unet: nn.Module, skip_compute: bool = False, targets: BypassTargets | None = None
) -> Iterator[nn.Module]:
    """Inside the block, the UNet's blenders take the spatial branch only (frames are independent).

    Works with PEFT adapters and gradient checkpointing (see the module docstring for
    ``skip_compute`` with checkpointing); hooks and overrides are removed on exit, also after an
    exception.

    Args:
        unet: an SVD ``UNetSpatioTemporalConditionModel``.
        skip_compute: also skip the temporal blocks' compute (temporal transformer blocks and
            temporal resnets return their input); the output is bitwise unchanged, only faster.
            The skipped parameters then get no gradient at all (``grad is None``). With gradient
            checkpointing, run ``backward()`` inside the context too.
        targets: :func:`bypass_targets` of ``unet``, computed once (None: found now, which walks
            the whole module tree: a few ms per step for a training loop).

    Yields:
        ``unet``.

    Example::

        with temporal_bypass(unet):
            out = unet(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample
        out.square().mean().backward()  # bypassed also when checkpointed blocks are recomputed
    """
    targets = bypass_targets(unet) if targets is None else targets
    handles = [b.register_forward_pre_hook(_force_image_only, with_kwargs=True) for b in targets.blocks]
    skipped: list[nn.Module] = []
    try:
        if skip_compute:
            for module in targets.temporal:
                module.forward = _passthrough  # instance attribute shadows the class method
                skipped.append(module)
        yield unet
    finally:
        for handle in handles:
            handle.remove()
        for module in skipped:
            del module.forward
