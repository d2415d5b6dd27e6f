"""The published SVD architectures, buildable with random weights (no download).

``hub_configs/<name>/`` holds the ``config.json`` values of every part of
``stabilityai/stable-video-diffusion-img2vid`` and ``-img2vid-xt`` as published on the Hugging Face
hub (UNet 1,524,623,082 parameters, VAE 97.7 M, CLIP ViT-H/14 vision tower 632 M).
:func:`write_random_svd` writes such a set with random weights in the hub layout, with the default
float32 files and the ``fp16`` variant files side by side as on the hub, so the real loading path
(``model.components.pretrained: <dir>``, ``variant: fp16``) can be exercised and measured without
the weights: tests on CPU, ``benchmarks/gpu_check.py`` on a GPU.
"""

from __future__ import annotations

import gc
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from recapture.utils import RecaptureError, atomic_path

__all__ = ["HUB_CONFIGS", "SVD_ARCHITECTURES", "build_random_part", "write_random_svd"]

HUB_CONFIGS = Path(__file__).parent / "hub_configs"
SVD_ARCHITECTURES = ("stable-video-diffusion-img2vid", "stable-video-diffusion-img2vid-xt")
_WEIGHT_PARTS = ("unet", "vae", "image_encoder")


def _config_dir(architecture: str) -> Path:
    if architecture not in SVD_ARCHITECTURES:
        raise RecaptureError(f"unknown SVD architecture {architecture!r}; use one of {list(SVD_ARCHITECTURES)}")
    return HUB_CONFIGS / architecture


def build_random_part(
    architecture: str, part: str, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """One part (``unet``, ``vae`` or ``image_encoder``) of a published architecture, randomly initialised.

    Args:
        architecture: ``stable-video-diffusion-img2vid`` or ``stable-video-diffusion-img2vid-xt``.
        part: which part.
        dtype: parameter dtype.
        device: where to build it (``"meta"`` for FLOP counting without memory).

    Returns:
        the module with the library's default initialisation, in eval mode.
    """
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = json.loads((_config_dir(architecture) / part / "config.json").read_text())
    with torch.device(device):
        if part == "unet":
            module = UNetSpatioTemporalConditionModel.from_config(config)
        elif part == "vae":
            module = AutoencoderKLTemporalDecoder.from_config(config)
        elif part == "image_encoder":
            keep = {k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")}
            module = CLIPVisionModelWithProjection(CLIPVisionConfig(**keep))
        else:
            raise RecaptureError(f"unknown SVD part {part!r}; use one of {list(_WEIGHT_PARTS)}")
    return module.to(dtype).eval()


def write_random_svd(
    path: str | Path,
    architecture: str = "stable-video-diffusion-img2vid",
    variants: Sequence[str | None] = (None, "fp16"),
    seed: int = 0,
) -> Path:
    """Write a full-size SVD set with random weights in the hub layout, atomically.

    One part at a time is built and written (peak memory about one float32 UNet, 6.1 GB), so the
    set can be made on a laptop. The directory holds ``model_index.json``, ``unet/``, ``vae/``,
    ``image_encoder/`` (each with ``config.json`` and, per variant, ``*.safetensors`` or
    ``*.fp16.safetensors``), ``scheduler/`` and ``feature_extractor/``: the stock
    ``StableVideoDiffusionPipeline.from_pretrained`` and :func:`recapture.adaptation.load_components`
    load it. About 14 GB on disk with both variants.

    Args:
        path: output directory (replaced if it exists).
        architecture: ``stable-video-diffusion-img2vid`` (14 frames) or ``...-img2vid-xt`` (25).
        variants: weight files to write: ``None`` for the default float32 files, ``"fp16"`` for the
            hub's half-precision variant.
        seed: seed of the random weights (the same for every variant).

    Returns:
        ``path``.
    """
    if not variants:
        raise RecaptureError("write_random_svd: give at least one variant (None for float32, 'fp16')")
    bad = [v for v in variants if v not in (None, "fp16")]
    if bad:
        raise RecaptureError(f"write_random_svd: unknown variants {bad}; use None (float32) and/or 'fp16'")
    source = _config_dir(architecture)
    path = Path(path)
    with atomic_path(path) as tmp:
        shutil.copytree(source, tmp)
        for i, part in enumerate(_WEIGHT_PARTS):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                module = build_random_part(architecture, part)
            for variant in variants:
                module.to(torch.float16 if variant == "fp16" else torch.float32)
                module.save_pretrained(tmp / part, variant=variant, safe_serialization=True)
            del module
            gc.collect()
        # save_pretrained rewrote each config.json with library defaults added; keep the published ones
        for part in _WEIGHT_PARTS:
            shutil.copy(source / part / "config.json", tmp / part / "config.json")
    return path
