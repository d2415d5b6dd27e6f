"""The spatial and temporal LoRA adapters of ReCapture: targeting, activation, training flags, files.

Two named PEFT adapters live on one SVD UNet:

* ``spatial``: the spatial self-attention projections (``...attentions.J.transformer_blocks.K.attn1``);
  trained on augmented single source frames with the temporal bypass (appearance of the video).
* ``temporal``: the linear layers of the temporal transformer blocks, as in the paper (attention
  ``attn1``/``attn2`` projections and the feed-forward layers ``ff_in``/``ff``, in
  ``...temporal_transformer_blocks.K``; narrower sets by option); trained on the masked anchor clip
  (motion / camera dynamics) while ``spatial`` stays active but frozen.

Adding a second PEFT adapter activates only that one; :func:`add_recapture_adapters` activates both
and verifies it. Files are the standard diffusers ``pytorch_lora_weights.safetensors`` written by
``save_lora_adapter`` (keys without a prefix, LoRA config in the safetensors metadata), so plain
diffusers code reads them with ``unet.load_lora_adapter(dir, prefix=None, adapter_name=...,
use_safetensors=True)``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch.nn as nn
from diffusers import UNetSpatioTemporalConditionModel

from recapture.adaptation.components import require_peft
from recapture.adaptation.quiet import quiet_dtype_cast_warning, quiet_logger
from recapture.utils import RecaptureError, atomic_path

__all__ = [
    "ADAPTER_NAMES",
    "LORA_WEIGHT_NAME",
    "SPATIAL_PATTERN",
    "SPATIAL_CONV_PATTERN",
    "TEMPORAL_CONV_PATTERN",
    "TEMPORAL_CROSS_PATTERN",
    "TEMPORAL_LINEAR_PATTERN",
    "TEMPORAL_PATTERN",
    "AdapterSwitch",
    "LoRAConfig",
    "adapter_parameters",
    "add_recapture_adapters",
    "keep_adapters_fp32",
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
# every nn.Linear of a temporal transformer block: attention projections and both feed-forwards
TEMPORAL_LINEAR_PATTERN = (
    r".*temporal_transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|(ff_in|ff)\.net\.(0\.proj|2))"
)
# the ResNet convolutions of each side (``LoRAConfig.convolutions``, beyond the paper): 3x3 Conv2d of
# ``spatial_res_block``, (3, 1, 1) Conv3d of ``temporal_res_block``
SPATIAL_CONV_PATTERN = r".*resnets\.\d+\.spatial_res_block\.conv[12]"
TEMPORAL_CONV_PATTERN = r".*resnets\.\d+\.temporal_res_block\.conv[12]"
_TEMPORAL_PATTERNS = {
    "linear": TEMPORAL_LINEAR_PATTERN,
    "attention": TEMPORAL_CROSS_PATTERN,
    "self_attention": TEMPORAL_PATTERN,
}
ADAPTER_NAMES = ("spatial", "temporal")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass
class LoRAConfig:
    """Rank and scaling of both ReCapture adapters.

    Attributes:
        rank: LoRA rank r (paper: 16).
        alpha: LoRA alpha; the update is scaled by alpha / rank. None means alpha = rank (scale 1).
        dropout: dropout on the LoRA branch input.
        temporal_targets: which layers of the temporal transformer blocks the temporal LoRA adapts:
            ``linear`` (the paper: every linear layer, i.e. the self- and cross-attention projections
            and the feed-forward layers ``ff_in`` and ``ff``; 8.91 M parameters at rank 16 on the
            full SVD UNet), ``attention`` (``attn1`` and ``attn2`` projections; 3.32 M) or
            ``self_attention`` (``attn1`` only, the narrowest; 1.60 M). The spatial LoRA: 1.60 M.
        convolutions: beyond the paper, off by default. Also adapt the ResNet convolutions of each
            adapter's side: the 3x3 ``spatial_res_block.conv1/conv2`` for the spatial LoRA, the
            (3, 1, 1) ``temporal_res_block.conv1/conv2`` for the temporal one (so the temporal bypass
            still keeps every temporal weight out of the spatial steps). For small priors such as
            ``recapture-tiny``, whose attention layers are too narrow for a rank-limited update to fit
            one video (benchmarks/README.md, "LoRA capacity"); a pretrained SVD does not need it.
    """

    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    temporal_targets: Literal["linear", "attention", "self_attention"] = "linear"
    convolutions: bool = False

    def validate(self, section: str = "model.lora") -> None:
        """Raise :class:`RecaptureError` naming the bad value (called before any work is done)."""
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise RecaptureError(f"{section}.rank={self.rank!r} must be an integer >= 1 (the paper: 16)")
        if self.alpha is not None and not self.alpha > 0:
            raise RecaptureError(f"{section}.alpha={self.alpha!r} must be > 0, or null for alpha = rank")
        if not 0.0 <= self.dropout < 1.0:
            raise RecaptureError(f"{section}.dropout={self.dropout!r} must be in [0, 1)")


def lora_target_modules(unet: nn.Module, name: str, config: LoRAConfig | None = None) -> list[str]:
    """Names of the ``nn.Linear`` modules the adapter ``name`` wraps (for inspection and tests).

    Args:
        unet: an SVD UNet (with or without adapters).
        name: ``"spatial"`` or ``"temporal"``.
        config: only ``temporal_targets`` matters.

    Returns:
        sorted module names.
    """
    pattern = re.compile(_pattern(name, config or LoRAConfig()))
    names = []
    for module_name, module in unet.named_modules():
        base = module_name
        layer = isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)) or hasattr(module, "base_layer")
        if pattern.fullmatch(base) and layer:
            names.append(base)
    return sorted(names)


def _pattern(name: str, config: LoRAConfig) -> str:
    if name == "spatial":
        pattern, conv = SPATIAL_PATTERN, SPATIAL_CONV_PATTERN
    elif name == "temporal":
        if config.temporal_targets not in _TEMPORAL_PATTERNS:
            raise RecaptureError(
                f"unknown lora.temporal_targets {config.temporal_targets!r}; use one of {sorted(_TEMPORAL_PATTERNS)}"
            )
        pattern, conv = _TEMPORAL_PATTERNS[config.temporal_targets], TEMPORAL_CONV_PATTERN
    else:
        raise RecaptureError(f"unknown adapter {name!r}; ReCapture's adapters are {list(ADAPTER_NAMES)}")
    return f"(?:{pattern})|(?:{conv})" if config.convolutions else pattern


def _peft_config(name: str, config: LoRAConfig):  # noqa: ANN202 - peft imported lazily
    from peft import LoraConfig

    config.validate("lora")
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
    :func:`set_trainable_adapter`) and float32 over any base dtype (:func:`keep_adapters_fp32`).

    Args:
        unet: the SVD UNet, a :class:`~recapture.adaptation.PeftUNetSpatioTemporalConditionModel`.
        config: rank, alpha, dropout, temporal cross-attention.

    Raises:
        RecaptureError: the UNet already has one of these adapters.
    """
    config = config or LoRAConfig()
    unet = require_peft(unet)
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
    keep_adapters_fp32(unet)
    set_active_adapters(unet, ADAPTER_NAMES)
    set_trainable_adapter(unet, ADAPTER_NAMES)


def _lora_layers(unet: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in unet.modules() if isinstance(m, LoraLayer)]


def _adapter_names(unet: nn.Module) -> list[str]:
    return sorted(getattr(unet, "peft_config", {}) or {})


def _as_names(name: str | Sequence[str] | None) -> list[str]:
    """One adapter name, several, or None (none) as a list."""
    return [] if name is None else [name] if isinstance(name, str) else list(name)


def _check_names(unet: nn.Module, names: Sequence[str]) -> None:
    _require_known(names, _adapter_names(unet))


def _require_known(names: Sequence[str], valid: list[str]) -> None:
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
    names = _as_names(name)
    _check_names(unet, names)
    for param in unet.parameters():
        param.requires_grad_(False)
    for n in names:
        for param in adapter_parameters(unet, n):
            param.requires_grad_(True)


class AdapterSwitch:
    """:func:`set_trainable_adapter` for a training loop: the adapters' parameters found once.

    Finding them walks every module and parameter of the UNet (a few ms per step); the switch then
    only flips the LoRA parameters' ``requires_grad``. Building it freezes every other parameter
    (as :func:`set_trainable_adapter` does at each call) and leaves the LoRA flags as they are;
    the other parameters must stay frozen while the switch is used.

    Args:
        unet: a UNet with adapters (e.g. after :func:`add_recapture_adapters`).

    Example::

        switch = AdapterSwitch(unet)
        switch.train("temporal")  # the same requires_grad flags as set_trainable_adapter(unet, "temporal")
    """

    def __init__(self, unet: nn.Module) -> None:
        self.names = tuple(_adapter_names(unet))
        self.parameters = {n: adapter_parameters(unet, n) for n in self.names}
        lora = {id(p) for params in self.parameters.values() for p in params}
        for param in unet.parameters():
            if id(param) not in lora:
                param.requires_grad_(False)

    def train(self, name: str | Sequence[str] | None) -> None:
        """Let gradients reach only the LoRA parameters of ``name`` (one, several or None)."""
        names = _as_names(name)
        _require_known(names, list(self.names))
        for params in self.parameters.values():
            for param in params:
                param.requires_grad_(False)
        for n in names:
            for param in self.parameters[n]:
                param.requires_grad_(True)


def _read_lora_file(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise RecaptureError(
            f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); it is truncated or "
            "corrupt: export the LoRA again (a fit run writes lora/spatial and lora/temporal)"
        ) from err


def _copy_exact(unet: nn.Module, name: str, state: dict, path: Path) -> None:
    """Copy the file's LoRA values into adapter ``name`` bit for bit (keys ``X.lora_A.weight``)."""
    params = dict(unet.named_parameters())
    for key, value in state.items():
        for part in (".lora_A.", ".lora_B."):
            if part in key:
                target = key.replace(part, f"{part}{name}.", 1)
                if target not in params or params[target].shape != value.shape:
                    raise RecaptureError(
                        f"{path}: tensor {key} {tuple(value.shape)} has no match in this UNet's {name!r} adapter; "
                        "use the same model.components and model.lora as the run that wrote it"
                    )
                params[target].data.copy_(value)


def keep_adapters_fp32(unet: nn.Module, names: Sequence[str] = ADAPTER_NAMES) -> None:
    """Keep the LoRA weights of ``names`` in float32, whatever the dtype of the frozen base weights.

    Optimiser states and small updates need the precision, and a LoRA trained in float32 must be
    used in float32 wherever it is loaded, or generation after loading would not reproduce
    generation after training. PEFT casts each layer's input to the LoRA dtype and the result back.
    """
    for name in names:
        if name in _adapter_names(unet):
            for param in adapter_parameters(unet, name):
                param.data = param.data.float()


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
    with atomic_path(directory) as tmp, quiet_dtype_cast_warning():
        unet.save_lora_adapter(tmp, adapter_name=name, safe_serialization=True, weight_name=LORA_WEIGHT_NAME)
    return directory


def load_lora(unet: UNetSpatioTemporalConditionModel, name: str, directory: str | os.PathLike) -> None:
    """Load a LoRA saved by :func:`save_lora` (or any diffusers ``save_lora_adapter``) as adapter ``name``.

    An adapter of that name already on the UNet is replaced. Afterwards every adapter on the UNet
    is active and trainable (narrow it with :func:`set_active_adapters` / :func:`set_trainable_adapter`).

    Args:
        unet: the SVD UNet, a :class:`~recapture.adaptation.PeftUNetSpatioTemporalConditionModel`.
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
    state = _read_lora_file(weights)
    unet = require_peft(unet)
    with warnings.catch_warnings():
        # PEFT's notes on multi-adapter models and on deleting an active adapter are expected here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        if name in _adapter_names(unet):
            unet.delete_adapters(name)
        try:  # diffusers logs the whole state-dict error (dozens of lines) before raising: reported below
            with quiet_logger("diffusers.loaders.peft", logging.CRITICAL):
                unet.load_lora_adapter(
                    str(directory),
                    prefix=None,
                    adapter_name=name,
                    weight_name=LORA_WEIGHT_NAME,
                    use_safetensors=True,
                    local_files_only=True,
                )
        except (RuntimeError, ValueError, KeyError) as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")
            raise RecaptureError(
                f"{weights} does not fit this UNet ({type(err).__name__}: {detail[:300]}): it was "
                "saved with another model or other LoRA settings (rank, targets); use the same model.components "
                "and model.lora as the run that wrote it"
            ) from err
    if name not in _adapter_names(unet):
        raise RecaptureError(f"{weights} holds no LoRA weights for this UNet's modules")
    # diffusers creates the adapter in the base dtype and casts the file's values into it; keep the
    # trained float32 values exactly
    keep_adapters_fp32(unet, [name])
    _copy_exact(unet, name, state, weights)
    all_names = _adapter_names(unet)
    set_active_adapters(unet, all_names)
    set_trainable_adapter(unet, all_names)
