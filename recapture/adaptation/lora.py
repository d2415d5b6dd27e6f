"""The spatial and temporal LoRA adapters of ReCapture: targeting, activation, training flags, files.

Two named PEFT adapters live on one SVD UNet:

* ``spatial``: the spatial self-attention projections (``...attentions.J.transformer_blocks.K.attn1``);
  trained on augmented single source frames with the temporal bypass (appearance of the video).
* ``temporal``: the temporal self-attention projections
  (``...temporal_transformer_blocks.K.attn1``, optionally ``attn2`` too); trained on the masked
  anchor clip (motion / camera dynamics) while ``spatial`` stays active but frozen.

Adding a second PEFT adapter activates only that one; :func:`add_recapture_adapters` activates both
and verifies it. Files are the standard diffusers ``pytorch_lora_weights.safetensors`` written by
``save_lora_adapter`` (keys without a prefix, LoRA config in the safetensors metadata), so plain
diffusers code reads them with ``unet.load_lora_adapter(dir, prefix=None, adapter_name=...,
use_safetensors=True)``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from diffusers import UNetSpatioTemporalConditionModel

from recapture.adaptation.components import _quiet_dtype_cast_warning, enable_peft
from recapture.utils import RecaptureError, atomic_path

__all__ = [
    "ADAPTER_NAMES",
    "LORA_WEIGHT_NAME",
    "SPATIAL_PATTERN",
    "TEMPORAL_CROSS_PATTERN",
    "TEMPORAL_PATTERN",
    "LoRAConfig",
    "adapter_parameters",
    "add_recapture_adapters",
    "load_lora",
    "lora_target_modules",
    "save_lora",
    "set_active_adapters",
    "set_trainable_adapter",
]

# PEFT matches a string ``target_modules`` with re.fullmatch against full module names. The spatial
# pattern is anchored on ``attentions.<i>.transformer_blocks`` because ``temporal_transformer_blocks``
# also ends in ``transformer_blocks``.
SPATIAL_PATTERN = r".*attentions\.\d+\.transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)"
TEMPORAL_PATTERN = r".*temporal_transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)"
TEMPORAL_CROSS_PATTERN = r".*temporal_transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
ADAPTER_NAMES = ("spatial", "temporal")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass
class LoRAConfig:
    """Rank and scaling of both ReCapture adapters.

    Attributes:
        rank: LoRA rank r (paper: 16).
        alpha: LoRA alpha; the update is scaled by alpha / rank. None means alpha = rank (scale 1).
        dropout: dropout on the LoRA branch input.
        temporal_cross_attention: also adapt the temporal blocks' cross-attention (``attn2``).
    """

    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    temporal_cross_attention: bool = False


def lora_target_modules(unet: nn.Module, name: str, config: LoRAConfig | None = None) -> list[str]:
    """Names of the ``nn.Linear`` modules the adapter ``name`` wraps (for inspection and tests).

    Args:
        unet: an SVD UNet (with or without adapters).
        name: ``"spatial"`` or ``"temporal"``.
        config: only ``temporal_cross_attention`` matters.

    Returns:
        sorted module names.
    """
    pattern = re.compile(_pattern(name, config or LoRAConfig()))
    names = []
    for module_name, module in unet.named_modules():
        base = module_name
        if pattern.fullmatch(base) and (isinstance(module, nn.Linear) or hasattr(module, "base_layer")):
            names.append(base)
    return sorted(names)


def _pattern(name: str, config: LoRAConfig) -> str:
    if name == "spatial":
        return SPATIAL_PATTERN
    if name == "temporal":
        return TEMPORAL_CROSS_PATTERN if config.temporal_cross_attention else TEMPORAL_PATTERN
    raise RecaptureError(f"unknown adapter {name!r}; ReCapture's adapters are {list(ADAPTER_NAMES)}")


def _peft_config(name: str, config: LoRAConfig):  # noqa: ANN202 - peft imported lazily
    from peft import LoraConfig

    if config.rank < 1:
        raise RecaptureError(f"LoRA rank must be >= 1, got {config.rank}")
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.rank if config.alpha is None else config.alpha,
        lora_dropout=config.dropout,
        target_modules=_pattern(name, config),
        init_lora_weights=True,
    )


def add_recapture_adapters(unet: UNetSpatioTemporalConditionModel, config: LoRAConfig | None = None) -> None:
    """Add the ``spatial`` and ``temporal`` LoRA adapters to ``unet`` and activate both.

    LoRA B matrices start at zero, so the UNet's output is unchanged until training. PEFT freezes
    every base parameter; both adapters' LoRA parameters are trainable (see
    :func:`set_trainable_adapter`).

    Args:
        unet: the SVD UNet (a stock one gets the PEFT methods in place).
        config: rank, alpha, dropout, temporal cross-attention.

    Raises:
        RecaptureError: the UNet already has one of these adapters.
    """
    config = config or LoRAConfig()
    unet = enable_peft(unet)
    existing = set(getattr(unet, "peft_config", {}) or {})
    clash = existing.intersection(ADAPTER_NAMES)
    if clash:
        raise RecaptureError(
            f"the UNet already has adapter(s) {sorted(clash)}; build a fresh UNet or load them with load_lora"
        )
    with warnings.catch_warnings():
        # PEFT warns that a second adapter makes a multi-adapter model: that is the intent here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for name in ADAPTER_NAMES:
            unet.add_adapter(_peft_config(name, config), adapter_name=name)
    set_active_adapters(unet, ADAPTER_NAMES)
    set_trainable_adapter(unet, ADAPTER_NAMES)


def _lora_layers(unet: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in unet.modules() if isinstance(m, LoraLayer)]


def _adapter_names(unet: nn.Module) -> list[str]:
    return sorted(getattr(unet, "peft_config", {}) or {})


def _check_names(unet: nn.Module, names: Sequence[str]) -> None:
    valid = _adapter_names(unet)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise RecaptureError(
            f"unknown adapter name(s) {unknown}; this UNet has {valid or 'no adapters (call add_recapture_adapters or load_lora)'}"
        )


def set_active_adapters(unet: UNetSpatioTemporalConditionModel, names: Sequence[str]) -> None:
    """Make exactly the adapters ``names`` active (e.g. ``["spatial"]`` for SDEdit); ``[]`` disables all.

    PEFT also marks the LoRA parameters of active adapters trainable and the others frozen: call
    :func:`set_trainable_adapter` afterwards when training.

    Args:
        unet: a UNet with adapters.
        names: adapter names, each one of the UNet's adapters.

    Raises:
        RecaptureError: an unknown name (the message lists the valid ones).
    """
    names = [names] if isinstance(names, str) else list(names)
    _check_names(unet, names)
    if not names:
        if _adapter_names(unet):
            unet.disable_adapters()
        return
    unet.enable_adapters()
    unet.set_adapter(names)
    # Verify: every LoRA layer that holds one of ``names`` must have it active (PEFT activates only
    # the last added adapter when layers are injected one adapter at a time).
    for layer in _lora_layers(unet):
        held = [n for n in names if n in layer.lora_A]
        missing = [n for n in held if n not in layer.active_adapters]
        if missing:
            raise RuntimeError(f"adapter(s) {missing} did not become active on a LoRA layer")


def adapter_parameters(unet: nn.Module, name: str) -> list[nn.Parameter]:
    """The LoRA parameters (A and B matrices) of adapter ``name``, in module order.

    Raises:
        RecaptureError: ``name`` is not one of the UNet's adapters.
    """
    _check_names(unet, [name])
    params: list[nn.Parameter] = []
    for layer in _lora_layers(unet):
        for attr in ("lora_A", "lora_B"):
            sub = getattr(layer, attr)
            if name in sub:
                params.extend(sub[name].parameters())
    return params


def set_trainable_adapter(unet: nn.Module, name: str | Sequence[str] | None) -> None:
    """Let gradients reach only the LoRA parameters of ``name``; everything else is frozen.

    Frozen adapters stay active (features pass through them), as in ReCapture's temporal steps
    where the spatial LoRA is used but not updated.

    Args:
        unet: a UNet with adapters.
        name: one adapter, several, or None to freeze every parameter.
    """
    names = [] if name is None else [name] if isinstance(name, str) else list(name)
    _check_names(unet, names)
    for param in unet.parameters():
        param.requires_grad_(False)
    for n in names:
        for param in adapter_parameters(unet, n):
            param.requires_grad_(True)


def save_lora(unet: UNetSpatioTemporalConditionModel, name: str, directory: str | os.PathLike) -> Path:
    """Save adapter ``name`` as ``<directory>/pytorch_lora_weights.safetensors`` (atomic directory).

    Args:
        unet: a UNet holding the adapter.
        name: adapter name.
        directory: output directory (replaced if it exists).

    Returns:
        ``directory``.
    """
    _check_names(unet, [name])
    directory = Path(directory)
    with atomic_path(directory) as tmp, _quiet_dtype_cast_warning():
        unet.save_lora_adapter(tmp, adapter_name=name, safe_serialization=True, weight_name=LORA_WEIGHT_NAME)
    return directory


def load_lora(unet: UNetSpatioTemporalConditionModel, name: str, directory: str | os.PathLike) -> None:
    """Load a LoRA saved by :func:`save_lora` (or any diffusers ``save_lora_adapter``) as adapter ``name``.

    An adapter of that name already on the UNet is replaced. Afterwards every adapter on the UNet
    is active and trainable (narrow it with :func:`set_active_adapters` / :func:`set_trainable_adapter`).

    Args:
        unet: the SVD UNet (a stock one gets the PEFT methods in place).
        name: adapter name to load it under.
        directory: directory containing ``pytorch_lora_weights.safetensors``.

    Raises:
        RecaptureError: the directory or the weights file is missing.
    """
    directory = Path(directory)
    weights = directory / LORA_WEIGHT_NAME
    if not directory.is_dir():
        raise RecaptureError(
            f"LoRA directory {str(directory)!r} does not exist; expected {LORA_WEIGHT_NAME} inside it"
        )
    if not weights.is_file():
        found = sorted(p.name for p in directory.iterdir())
        raise RecaptureError(
            f"LoRA directory {str(directory)!r} has no {LORA_WEIGHT_NAME} (found {found}); "
            "point it at a directory written by recapture.adaptation.save_lora"
        )
    unet = enable_peft(unet)
    with warnings.catch_warnings():
        # PEFT's notes on multi-adapter models and on deleting an active adapter are expected here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        if name in _adapter_names(unet):
            unet.delete_adapters(name)
        unet.load_lora_adapter(
            str(directory),
            prefix=None,
            adapter_name=name,
            weight_name=LORA_WEIGHT_NAME,
            use_safetensors=True,
            local_files_only=True,
        )
    if name not in _adapter_names(unet):
        raise RecaptureError(f"{weights} holds no LoRA weights for this UNet's modules")
    all_names = _adapter_names(unet)
    set_active_adapters(unet, all_names)
    set_trainable_adapter(unet, all_names)
