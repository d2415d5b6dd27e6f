"""Adaptation stage: SVD components, the spatial/temporal LoRAs, the temporal bypass and the EDM loss.

Plain torch (no Lightning): the LightningModule in :mod:`recapture.training` and the samplers in
:mod:`recapture.sampling` build on these names.
"""

from recapture.adaptation.bypass import temporal_bypass
from recapture.adaptation.components import (
    ComponentsConfig,
    PeftUNetSpatioTemporalConditionModel,
    SVDComponents,
    build_tiny_components,
    clip_preprocess,
    enable_peft,
    load_components,
    save_components,
    svd_scheduler,
)
from recapture.adaptation.lora import (
    ADAPTER_NAMES,
    LORA_WEIGHT_NAME,
    SPATIAL_PATTERN,
    TEMPORAL_CROSS_PATTERN,
    TEMPORAL_PATTERN,
    LoRAConfig,
    adapter_parameters,
    add_recapture_adapters,
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
    added_time_ids,
    edm_loss,
    edm_scalings,
    encode_condition,
    encode_latents,
    mask_to_latent,
    sample_sigma,
)

__all__ = [
    "ADAPTER_NAMES",
    "LORA_WEIGHT_NAME",
    "SPATIAL_PATTERN",
    "TEMPORAL_CROSS_PATTERN",
    "TEMPORAL_PATTERN",
    "ComponentsConfig",
    "ConditionBatch",
    "EDMConfig",
    "LoRAConfig",
    "LossOutput",
    "PeftUNetSpatioTemporalConditionModel",
    "SVDComponents",
    "adapter_parameters",
    "add_recapture_adapters",
    "added_time_ids",
    "build_tiny_components",
    "clip_preprocess",
    "edm_loss",
    "edm_scalings",
    "enable_peft",
    "encode_condition",
    "encode_latents",
    "load_components",
    "load_lora",
    "lora_target_modules",
    "mask_to_latent",
    "sample_sigma",
    "save_components",
    "save_lora",
    "set_active_adapters",
    "set_trainable_adapter",
    "svd_scheduler",
    "temporal_bypass",
]
