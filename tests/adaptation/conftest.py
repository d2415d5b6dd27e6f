"""Fixtures of the adaptation tests: tiny SVD parts (fresh per test) and a saved copy on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recapture.adaptation import SVDComponents, build_tiny_components, save_components


@pytest.fixture
def tiny() -> SVDComponents:
    """A fresh tiny random SVD set (tests may add adapters to its UNet)."""
    return build_tiny_components(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set saved in ``save_pretrained`` layout (seed 0)."""
    return save_components(build_tiny_components(seed=0), tmp_path_factory.mktemp("svd") / "tiny-svd")


def _unet_inputs(batch: int = 1, frames: int = 4, size: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for the tiny UNet: ``sample`` (B, T, 8, h, w), timestep, embeddings, time ids."""
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, frames, 8, size, size, generator=g),
        "timestep": torch.full((batch,), 0.3),
        "encoder_hidden_states": torch.randn(batch, 1, 32, generator=g),
        "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1),
    }


def _run_unet(unet: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return unet(
        inputs["sample"],
        inputs["timestep"],
        encoder_hidden_states=inputs["encoder_hidden_states"],
        added_time_ids=inputs["added_time_ids"],
        return_dict=False,
    )[0]


def _perturb_adapter(unet: torch.nn.Module, name: str, scale: float = 0.1, seed: int = 1) -> None:
    """LoRA B starts at zero (the adapter is a no-op): add noise to adapter ``name``'s A and B."""
    from recapture.adaptation import adapter_parameters

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(unet, name):
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture
def unet_inputs():  # noqa: ANN201
    """``unet_inputs(batch, frames, size, seed)`` -> dict of random tiny-UNet inputs."""
    return _unet_inputs


@pytest.fixture
def run_unet():  # noqa: ANN201
    """``run_unet(unet, inputs)`` -> UNet output ``(B, T, 4, h, w)``."""
    return _run_unet


@pytest.fixture
def perturb_adapter():  # noqa: ANN201
    """``perturb_adapter(unet, name)``: make the adapter non-trivial (LoRA B starts at zero)."""
    return _perturb_adapter
