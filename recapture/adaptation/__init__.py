"""Adaptation stage: SVD components, the spatial/temporal LoRAs, the temporal bypass and the EDM loss.

Plain torch (no Lightning): the LightningModule in :mod:`recapture.training` and the samplers in
:mod:`recapture.sampling` build on these names.
"""

from recapture.adaptation.bypass import temporal_bypass
from recapture.adaptation.clip import CLIP_MEAN, CLIP_SIZE, CLIP_STD, clip_preprocess
from recapture.adaptation.components import (
    ComponentsConfig,
    PeftUNetSpatioTemporalConditionModel,
    SVDComponents,
    require_peft,
    svd_scheduler,
)
from recapture.adaptation.loading import load_components, resolve_components, save_components, weights_dtype
from recapture.adaptation.lora import (
    ADAPTER_NAMES,
    LORA_WEIGHT_NAME,
    SPATIAL_PATTERN,
    TEMPORAL_CROSS_PATTERN,
    TEMPORAL_LINEAR_PATTERN,
    TEMPORAL_PATTERN,
    LoRAConfig,
    adapter_parameters,
    add_recapture_adapters,
    keep_adapters_fp32,
    load_lora,
    lora_target_modules,
    save_lora,
    set_active_adapters,
    set_trainable_adapter,
)
from recapture.adaptation.objective import (
    ConditionBatch,
    EDMConfig,
    LossOutput,
    MicroConditioning,
    added_time_ids,
    edm_loss,
    edm_scalings,
    encode_condition,
    encode_condition_latents,
    encode_image_embeds,
    encode_latents,
    mask_to_latent,
    sample_sigma,
    vae_factor,
)
from recapture.adaptation.step import Kind, step_context, step_loss
from recapture.adaptation.tiny import build_tiny_components

__all__ = [
    "ADAPTER_NAMES",
    "CLIP_MEAN",
    "CLIP_SIZE",
    "CLIP_STD",
    "LORA_WEIGHT_NAME",
    "SPATIAL_PATTERN",
    "TEMPORAL_CROSS_PATTERN",
    "TEMPORAL_LINEAR_PATTERN",
    "TEMPORAL_PATTERN",
    "ComponentsConfig",
    "Kind",
    "ConditionBatch",
    "EDMConfig",
    "LoRAConfig",
    "LossOutput",
    "MicroConditioning",
    "PeftUNetSpatioTemporalConditionModel",
    "SVDComponents",
    "adapter_parameters",
    "add_recapture_adapters",
    "keep_adapters_fp32",
    "added_time_ids",
    "build_tiny_components",
    "clip_preprocess",
    "edm_loss",
    "edm_scalings",
    "encode_condition",
    "encode_condition_latents",
    "encode_image_embeds",
    "encode_latents",
    "load_components",
    "require_peft",
    "resolve_components",
    "load_lora",
    "lora_target_modules",
    "mask_to_latent",
    "sample_sigma",
    "save_components",
    "save_lora",
    "set_active_adapters",
    "set_trainable_adapter",
    "step_context",
    "step_loss",
    "vae_factor",
    "svd_scheduler",
    "temporal_bypass",
    "weights_dtype",
]
