"""Tiny SVD parts, prompts and LoRA helpers for the sampling tests.

Test modules use SIZE = 32 (the tiny VAE downsamples 8x: 4x4 latents) and FRAMES = 3.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from recapture.adaptation import (
    LoRAConfig,
    SVDComponents,
    adapter_parameters,
    add_recapture_adapters,
    build_tiny_components,
)

SIZE = 32
FRAMES = 3


def smooth_video(frames: int, size: int, seed: int) -> torch.Tensor:
    """(T, 3, size, size) smooth random video in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames, 3, 4, 4, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


@torch.no_grad()
def perturb_adapter(components: SVDComponents, name: str, seed: int, scale: float = 0.5) -> None:
    """Give adapter ``name`` random weights (LoRA B starts at zero, i.e. no effect)."""
    gen = torch.Generator().manual_seed(seed)
    for p in adapter_parameters(components.unet, name):
        p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Tiny models gain nothing from intra-op threads (see tests/conftest.py)."""


@pytest.fixture
def make_video() -> Callable[[int, int, int], torch.Tensor]:
    """``make_video(frames, size, seed)``: a smooth random (T, 3, size, size) video in [0, 1]."""
    return smooth_video


@pytest.fixture
def perturb() -> Callable[..., None]:
    """``perturb(components, adapter_name, seed)``: random weights for one LoRA adapter."""
    return perturb_adapter


@pytest.fixture(scope="module")
def tiny() -> SVDComponents:
    """Tiny random SVD parts without adapters (shared by a module: tests must not modify them)."""
    return build_tiny_components(seed=0)


@pytest.fixture
def lora_components() -> SVDComponents:
    """Tiny parts with both ReCapture adapters, both given random (non-zero) weights."""
    components = build_tiny_components(seed=0)
    add_recapture_adapters(components.unet, LoRAConfig(rank=4))
    perturb_adapter(components, "spatial", seed=1)
    perturb_adapter(components, "temporal", seed=2)
    return components


@pytest.fixture
def image() -> torch.Tensor:
    """(3, SIZE, SIZE) image prompt."""
    return smooth_video(1, SIZE, seed=10)[0]


@pytest.fixture
def video() -> torch.Tensor:
    """(FRAMES, 3, SIZE, SIZE) video to refine or use as anchor."""
    return smooth_video(FRAMES, SIZE, seed=11)
