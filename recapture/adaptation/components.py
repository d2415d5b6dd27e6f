"""Stable Video Diffusion parts: what they are, where they come from, how they are loaded and saved.

One loading path serves the real weights (hub id or local directory, e.g.
``stabilityai/stable-video-diffusion-img2vid`` or ``-img2vid-xt``) and saved sets such as the tiny
random one (:mod:`recapture.adaptation.tiny`) or the project's own prior. The UNet is built or
loaded as :class:`PeftUNetSpatioTemporalConditionModel`, the stock diffusers UNet plus diffusers'
``PeftAdapterMixin`` (``add_adapter``, ``set_adapter``, ``save_lora_adapter``, ``load_lora_adapter``),
which the stock SVD UNet lacks. That class is chosen when the object is created (``from_pretrained``
in :func:`~recapture.adaptation.load_components`, the constructor in :mod:`~recapture.adaptation.tiny`
and :meth:`~recapture.adaptation.prior.UNetSize.build`); no UNet changes class afterwards, and
:func:`require_peft` turns a stock one away with the fix. CLIP preprocessing lives in
:mod:`recapture.adaptation.clip`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.loaders.peft import PeftAdapterMixin
from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

from recapture.adaptation.clip import default_feature_extractor
from recapture.adaptation.objective import vae_factor
from recapture.adaptation.quiet import quiet_logger
from recapture.utils import RecaptureError

if TYPE_CHECKING:
    from diffusers import StableVideoDiffusionPipeline

log = logging.getLogger(__name__)


__all__ = ["ComponentsConfig", "PeftUNetSpatioTemporalConditionModel", "SVDComponents", "require_peft", "svd_scheduler"]


# The scheduler configuration shipped with SVD img2vid and img2vid-xt: EDM sigmas (Karras spacing,
# 0.002..700), v-prediction, continuous timesteps c_noise = 0.25 ln(sigma).
_SVD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    interpolation_type="linear",
    use_karras_sigmas=True,
    sigma_min=0.002,
    sigma_max=700.0,
    timestep_spacing="leading",
    timestep_type="continuous",
    steps_offset=1,
)

_STOCK_UNET = "UNetSpatioTemporalConditionModel"


class PeftUNetSpatioTemporalConditionModel(UNetSpatioTemporalConditionModel, PeftAdapterMixin):
    """The SVD UNet with diffusers' PEFT adapter methods; saves its config under the stock class name.

    Identical weights, config and forward to :class:`diffusers.UNetSpatioTemporalConditionModel`, so
    stock diffusers code loads what it saves, and it loads what stock code saves:
    ``PeftUNetSpatioTemporalConditionModel.from_pretrained(path, subfolder="unet")`` (pass it as
    ``unet=`` to ``StableVideoDiffusionPipeline.from_pretrained`` for a pipeline with adapters).
    """

    def to_json_string(self) -> str:
        config = json.loads(super().to_json_string())
        config["_class_name"] = _STOCK_UNET
        return json.dumps(config, indent=2, sort_keys=True) + "\n"


def require_peft(unet: object) -> PeftUNetSpatioTemporalConditionModel:
    """``unet`` itself when it has the PEFT adapter methods; otherwise one error naming the fix.

    The adapter methods come with the class the UNet is created as
    (:class:`PeftUNetSpatioTemporalConditionModel`), never by changing an existing object's class: a
    stock ``UNetSpatioTemporalConditionModel`` (e.g. the ``unet`` of a pipeline built by diffusers'
    ``from_pretrained``) is refused, with how to load it as the PEFT class instead.
    """
    if isinstance(unet, PeftAdapterMixin) and isinstance(unet, UNetSpatioTemporalConditionModel):
        return unet  # type: ignore[return-value]
    if isinstance(unet, UNetSpatioTemporalConditionModel):
        raise RecaptureError(
            "this stock diffusers UNetSpatioTemporalConditionModel has no PEFT adapter methods; load it as "
            "recapture.adaptation.PeftUNetSpatioTemporalConditionModel (recapture.adaptation.load_components "
            "does; or PeftUNetSpatioTemporalConditionModel.from_pretrained(path, subfolder='unet'), passed as "
            "unet= to StableVideoDiffusionPipeline.from_pretrained)"
        )
    raise RecaptureError(
        f"expected an SVD UNet (UNetSpatioTemporalConditionModel), got {type(unet).__name__}; "
        "load the UNet with recapture.adaptation.load_components"
    )


@dataclass
class SVDComponents:
    """The parts of Stable Video Diffusion used for fine-tuning and sampling.

    Attributes:
        unet: the spatio-temporal denoiser (with PEFT adapter methods).
        vae: the temporal-decoder VAE; latents are ``vae.config.scaling_factor`` times the posterior.
        image_encoder: CLIP vision tower whose ``image_embeds`` condition the UNet.
        scheduler: EDM Euler scheduler with SVD's configuration.
        feature_extractor: CLIP normalisation used by the stock pipeline (None: a default one).
        num_frames_default: clip length the weights were trained for (14 img2vid, 25 xt).
    """

    unet: PeftUNetSpatioTemporalConditionModel
    vae: AutoencoderKLTemporalDecoder
    image_encoder: CLIPVisionModelWithProjection
    scheduler: EulerDiscreteScheduler
    feature_extractor: CLIPImageProcessorPil | None = None
    num_frames_default: int = 14

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each axis (8 for SVD)."""
        return vae_factor(self.vae)

    def placed(
        self, device: torch.device | str, parts: tuple[str, ...] = ("unet", "vae", "image_encoder")
    ) -> contextlib.AbstractContextManager[torch.device]:
        """Context manager: ``parts`` on ``device`` inside the block, back where they were after.

        The one way stages place models (see :mod:`recapture.adaptation.placement`).
        """
        from recapture.adaptation.placement import placed

        return placed([getattr(self, p) for p in parts], device)

    def to_pipeline(self) -> StableVideoDiffusionPipeline:
        """The stock diffusers :class:`StableVideoDiffusionPipeline` over these parts (shared, not copied)."""
        # the pipeline module names transformers' CLIPImageProcessor, whose default backend needs
        # torchvision; transformers then warns that it falls back to the PIL backend, as intended
        with quiet_logger("transformers.utils.import_utils"):
            from diffusers import StableVideoDiffusionPipeline

        feature_extractor = self.feature_extractor or default_feature_extractor()
        return StableVideoDiffusionPipeline(
            vae=self.vae,
            image_encoder=self.image_encoder,
            unet=self.unet,
            scheduler=self.scheduler,
            feature_extractor=feature_extractor,
        )


@dataclass
class ComponentsConfig:
    """Where the SVD parts come from (YAML-friendly).

    Attributes:
        pretrained: hub id (``stabilityai/stable-video-diffusion-img2vid``, ``...-img2vid-xt``) or a
            local directory in ``save_pretrained`` layout, or ``recapture-tiny``: the project's own small
            prior shipped with the package (8 frames of 64x96, trained on procedural scenes; see
            ``recapture/assets/recapture-tiny/model_card.md``). Ignored when ``tiny`` is set.
        variant: weights variant to try first (``fp16``); falls back to the default files.
        dtype: weights dtype (``float32``, ``float16``, ``bfloat16``); training uses autocast on top.
            On a CPU, float16 is loaded as bfloat16 under bf16 trainer precision, else as float32
            (float16 CPU kernels are very slow and fail under autocast).
        tiny: build the tiny random set from config instead (tests, offline demo).
        tiny_seed: seed of the tiny random weights.
        num_frames: default clip length; None infers it (25 for ``-xt`` names, else 14).
    """

    pretrained: str | None = "stabilityai/stable-video-diffusion-img2vid"
    variant: str | None = "fp16"
    dtype: str = "float32"
    tiny: bool = False
    tiny_seed: int = 0
    num_frames: int | None = None


def svd_scheduler() -> EulerDiscreteScheduler:
    """An :class:`EulerDiscreteScheduler` with SVD's shipped configuration."""
    return EulerDiscreteScheduler(**_SVD_SCHEDULER)
