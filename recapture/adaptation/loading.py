"""Loading and saving SVD sets: resolve the source before heavy work, pick the dtype, load every part.

``load_components`` reads a hub id (from the cache, downloading only the files it needs) or a local
directory in ``save_pretrained`` layout, or builds the tiny random set; ``save_components`` writes
a set that both :func:`load_components` and the stock ``StableVideoDiffusionPipeline`` read.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

from recapture.adaptation.clip import default_feature_extractor
from recapture.adaptation.components import (
    _STOCK_UNET,
    ComponentsConfig,
    PeftUNetSpatioTemporalConditionModel,
    SVDComponents,
)
from recapture.adaptation.quiet import quiet_dtype_cast_warning
from recapture.adaptation.tiny import build_tiny_components
from recapture.hub import SHIPPED_MODELS
from recapture.utils import RecaptureError, atomic_path

log = logging.getLogger(__name__)

__all__ = ["load_components", "resolve_components", "save_components", "weights_dtype"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

def weights_dtype(
    name: str, device: torch.device | str | None = None, precision: str | int | None = None
) -> torch.dtype:
    """The dtype the weights are loaded in: ``name``, except float16 on a CPU.

    float16 kernels on a CPU are ~100x slower than bfloat16 (or float32) ones and float16 weights
    fail under CPU autocast (``group_norm``), so on a CPU float16 becomes bfloat16 when the trainer
    runs in bf16 precision (``bf16-mixed``, ``bf16-true``) and float32 otherwise, with one log line.

    Args:
        name: ``float32``, ``float16`` or ``bfloat16``.
        device: where the weights will run (None: no adjustment).
        precision: the Lightning trainer precision (``"bf16-mixed"``, ``"32-true"``, ...), if any.

    Raises:
        RecaptureError: an unknown dtype name.
    """
    if name not in _DTYPES:
        raise RecaptureError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}")
    dtype = _DTYPES[name]
    if dtype != torch.float16 or device is None or torch.device(device).type != "cpu":
        return dtype
    adjusted = torch.bfloat16 if str(precision or "").startswith("bf16") else torch.float32
    log.info(
        "weights: float16 is slow on a CPU and fails under CPU autocast: loading them as %s instead%s",
        str(adjusted).removeprefix("torch."),
        f" (trainer precision {precision})" if adjusted == torch.bfloat16 else "",
    )
    return adjusted


# What a pipeline directory must hold, and what to fetch of a hub repository (never the root
# ``svd*.safetensors`` checkpoints of the original release, which are as large as the parts).
_REQUIRED = ("model_index.json", "unet/config.json", "vae/config.json", "image_encoder/config.json",
             "scheduler/scheduler_config.json")
_PARTS = ("unet", "vae", "image_encoder")
_DEFAULT_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def _hub_patterns(variant: str | None, parts: tuple[str, ...] = _PARTS) -> list[str]:
    configs = ["model_index.json", "*/config.json", "*/*_config.json"]
    if variant:
        return configs + [f"{p}/*.{variant}.safetensors" for p in parts]
    return configs + [f"{p}/{w}" for p in parts for w in _DEFAULT_WEIGHTS]


def _has_weights(part_dir: Path, variant: str | None) -> bool:
    if not part_dir.is_dir():
        return False
    names = [f.name for f in part_dir.iterdir()]
    if variant:
        return any(f".{variant}." in n for n in names)
    return any(n.endswith((".safetensors", ".bin")) and n.count(".") == 1 for n in names)  # no variant infix


def resolve_components(config: ComponentsConfig) -> Path:
    """Resolve ``config.pretrained`` to a local pipeline directory before any heavy work.

    A local directory is checked; a hub id is taken from the Hugging Face cache or downloaded
    (configs and the ``variant`` weights, falling back to the default weights for parts without
    that variant). Loading afterwards makes no hub calls.

    Returns:
        the directory (``model_index.json``, ``unet/``, ``vae/``, ``image_encoder/``, ``scheduler/``).

    Raises:
        RecaptureError: empty source, missing directory, or weights neither cached nor downloadable
            (one line naming the model and how to get it).
    """
    from recapture.hub import looks_like_hub_id, resolve_model, shipped_model

    shipped = shipped_model(config.pretrained) if config.pretrained else None
    if shipped is not None:
        return shipped
    if not config.pretrained:
        raise RecaptureError(
            "model.components.pretrained is empty; give a hub id or a local directory, or set tiny: true"
        )
    fix = "or set model.components.pretrained to a local directory (save_pretrained layout)"
    if not looks_like_hub_id(config.pretrained) or Path(config.pretrained).expanduser().is_dir():
        return resolve_model(config.pretrained, "SVD weights", required=_REQUIRED, fix=fix)
    root = resolve_model(config.pretrained, "SVD weights", _hub_patterns(config.variant), _REQUIRED, fix)
    missing = tuple(p for p in _PARTS if not _has_weights(root / p, config.variant))
    if missing and config.variant:  # the repo lacks that variant for some parts: fetch their default weights
        log.info("SVD weights %s: no %r variant for %s; using the default weights", config.pretrained,
                 config.variant, ", ".join(missing))
        root = resolve_model(config.pretrained, "SVD weights", _hub_patterns(None, missing), _REQUIRED, fix)
    return root


def load_components(
    config: ComponentsConfig, device: torch.device | str | None = None, precision: str | int | None = None
) -> SVDComponents:
    """Load the SVD parts described by ``config`` (or build the tiny set when ``config.tiny``).

    Args:
        config: source, variant and dtype.
        device: where the parts will run; on a CPU float16 weights are loaded as bfloat16/float32
            (see :func:`weights_dtype`). The parts are returned on the CPU either way.
        precision: the trainer precision, for that choice.

    Returns:
        the components, in eval mode, on the CPU.

    Raises:
        RecaptureError: unknown dtype, missing local directory, or weights not reachable.
    """
    dtype = weights_dtype(config.dtype, device, precision)
    if config.tiny:
        parts = build_tiny_components(config.tiny_seed)
        with quiet_dtype_cast_warning():
            for module in (parts.unet, parts.vae, parts.image_encoder):
                module.to(dtype)
        if config.num_frames is not None:
            parts.num_frames_default = config.num_frames
        return parts
    source = str(resolve_components(config))

    def load(part: str, loader: Any, **kwargs: Any) -> Any:
        return _load_part(source, part, loader, config.variant, **kwargs)

    unet = load("unet", PeftUNetSpatioTemporalConditionModel.from_pretrained, torch_dtype=dtype)
    vae = load("vae", AutoencoderKLTemporalDecoder.from_pretrained, torch_dtype=dtype)
    image_encoder = load("image_encoder", CLIPVisionModelWithProjection.from_pretrained, dtype=dtype)
    scheduler = _wrap_load_error(source, "scheduler", EulerDiscreteScheduler.from_pretrained, source,
                                 subfolder="scheduler")
    try:
        feature_extractor = CLIPImageProcessorPil.from_pretrained(source, subfolder="feature_extractor")
    except OSError:
        log.info("no feature_extractor in %s; using CLIP's default normalisation", source)
        feature_extractor = default_feature_extractor()
    for module in (unet, vae, image_encoder):
        module.eval()
    name = Path(config.pretrained.rstrip("/")).name.lower()
    if config.num_frames:
        num_frames = config.num_frames
    elif config.pretrained in SHIPPED_MODELS:  # the project's priors record their clip length
        num_frames = int(unet.config.num_frames)
    else:
        num_frames = 25 if re.search(r"(^|[-_])xt([-_.]|$)", name) else 14
    return SVDComponents(unet, vae, image_encoder, scheduler, feature_extractor, num_frames)


def _wrap_load_error(source: str, part: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError) as err:
        raise RecaptureError(
            f"could not load {part!r} of the SVD weights in {source}: {err.__class__.__name__}: {err}; the "
            "directory is incomplete or corrupt: download it again or pass another directory"
        ) from err


def _load_part(source: str, part: str, loader: Any, variant: str | None, **kwargs: Any) -> Any:
    local = Path(source) / part
    if variant and not _has_weights(local, variant):
        log.info("no %r variant in %s; loading the default weights", variant, local)
        variant = None
    if variant:
        kwargs["variant"] = variant
    return _wrap_load_error(source, part, loader, source, subfolder=part, local_files_only=True, **kwargs)


def save_components(components: SVDComponents, path: str | os.PathLike) -> Path:
    """Save the parts in diffusers' ``save_pretrained`` pipeline layout, atomically.

    The directory loads with :func:`load_components` and with the stock
    ``StableVideoDiffusionPipeline.from_pretrained``.

    Args:
        components: parts without LoRA adapters (save adapters with ``save_lora``).
        path: output directory (replaced if it exists).

    Returns:
        ``path``.
    """
    if getattr(components.unet, "peft_config", None):
        raise RecaptureError(
            f"the UNet carries LoRA adapters {sorted(components.unet.peft_config)}; save the base components "
            "before add_recapture_adapters, and the adapters with recapture.adaptation.save_lora"
        )
    path = Path(path)
    feature_extractor = components.feature_extractor or default_feature_extractor()
    with atomic_path(path) as tmp:
        tmp.mkdir()
        components.unet.save_pretrained(tmp / "unet")
        components.vae.save_pretrained(tmp / "vae")
        components.image_encoder.save_pretrained(tmp / "image_encoder")
        components.scheduler.save_pretrained(tmp / "scheduler")
        feature_extractor.save_pretrained(tmp / "feature_extractor")
        import diffusers

        index = {
            "_class_name": "StableVideoDiffusionPipeline",
            "_diffusers_version": diffusers.__version__,
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "unet": ["diffusers", _STOCK_UNET],
            "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return path
