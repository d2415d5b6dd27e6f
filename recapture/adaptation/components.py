"""Stable Video Diffusion parts: load pretrained ones, build a tiny random set, save, CLIP preprocessing.

One loading path serves the real weights (hub id or local directory, e.g.
``stabilityai/stable-video-diffusion-img2vid`` or ``-img2vid-xt``) and the tiny random set used by
tests and the offline demo (saved with :func:`save_components`, loaded back with
:func:`load_components`). The UNet is loaded as :class:`PeftUNetSpatioTemporalConditionModel`, the
stock diffusers UNet plus diffusers' ``PeftAdapterMixin`` (``add_adapter``, ``set_adapter``,
``save_lora_adapter``, ``load_lora_adapter``), which the stock SVD UNet lacks.

The feature extractor is ``transformers.CLIPImageProcessorPil`` (the default ``CLIPImageProcessor``
backend needs torchvision, which must not be imported here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.loaders.peft import PeftAdapterMixin
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

from recapture.utils import RecaptureError, atomic_path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Raise logger ``name`` to ERROR inside the block (for known-spurious library warnings)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quiet_dtype_cast_warning() -> contextlib.AbstractContextManager[None]:
    """Silence diffusers' spurious "should be kept in float32: []" warning on ``Module.to(dtype)``."""
    return _quiet_logger("diffusers.models.modeling_utils")


# The SVD pipeline module names transformers' CLIPImageProcessor, whose default backend needs
# torchvision; transformers then warns that it falls back to the PIL backend, which is what we use.
with _quiet_logger("transformers.utils.import_utils"):
    from diffusers import StableVideoDiffusionPipeline

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ComponentsConfig",
    "PeftUNetSpatioTemporalConditionModel",
    "SVDComponents",
    "build_tiny_components",
    "clip_preprocess",
    "enable_peft",
    "load_components",
    "save_components",
    "svd_scheduler",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224

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

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_STOCK_UNET = "UNetSpatioTemporalConditionModel"


class PeftUNetSpatioTemporalConditionModel(UNetSpatioTemporalConditionModel, PeftAdapterMixin):
    """The SVD UNet with diffusers' PEFT adapter methods; saves its config under the stock class name.

    Identical weights, config and forward to :class:`diffusers.UNetSpatioTemporalConditionModel`, so
    stock diffusers code loads what it saves.
    """

    def to_json_string(self) -> str:
        config = json.loads(super().to_json_string())
        config["_class_name"] = _STOCK_UNET
        return json.dumps(config, indent=2, sort_keys=True) + "\n"


def enable_peft(unet: UNetSpatioTemporalConditionModel) -> PeftUNetSpatioTemporalConditionModel:
    """Give a stock SVD UNet the PEFT adapter methods in place (no copy) and return it.

    The subclass adds methods only, so switching the instance's class is safe; a UNet loaded by
    :func:`load_components` already has them.
    """
    if isinstance(unet, PeftAdapterMixin):
        return unet  # type: ignore[return-value]
    if type(unet) is not UNetSpatioTemporalConditionModel:
        raise RecaptureError(
            f"expected a diffusers UNetSpatioTemporalConditionModel, got {type(unet).__name__}; "
            "load the UNet with recapture.adaptation.load_components"
        )
    unet.__class__ = PeftUNetSpatioTemporalConditionModel
    return unet  # type: ignore[return-value]


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
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

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
        feature_extractor = self.feature_extractor or _default_feature_extractor()
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
            local directory in ``save_pretrained`` layout. Ignored when ``tiny`` is set.
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


def _default_feature_extractor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def build_tiny_components(seed: int = 0) -> SVDComponents:
    """Build a tiny randomly initialised SVD set in memory (a few MB, the real classes, small numbers).

    The VAE has four 32-channel blocks (8x downsampling like SVD) and its ``scaling_factor`` is set
    so that latents of natural-looking images have about unit standard deviation, as real SVD
    latents do (with the default 0.18215 almost every noise level would be pure noise).

    Args:
        seed: seed of the random weights.

    Returns:
        the components; ``num_frames_default`` is 14.
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = PeftUNetSpatioTemporalConditionModel(
            sample_size=8,
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=32,
            num_attention_heads=(2, 4),
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=24,
            num_frames=14,
        )
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=(32, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
        )
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                projection_dim=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=CLIP_SIZE,
                patch_size=32,
            )
        )
        vae.register_to_config(scaling_factor=_unit_std_scaling(vae))
    finally:
        torch.random.set_rng_state(gen_state)
    for module in (unet, vae, image_encoder):
        module.eval()
    return SVDComponents(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        scheduler=svd_scheduler(),
        feature_extractor=_default_feature_extractor(),
        num_frames_default=14,
    )


@torch.no_grad()
def _unit_std_scaling(vae: AutoencoderKLTemporalDecoder) -> float:
    """Scaling factor giving posterior means of smooth random images a unit standard deviation."""
    gen = torch.Generator().manual_seed(1234)
    coarse = torch.rand(8, 3, 4, 4, generator=gen)
    images = F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    latents = vae.encode(images * 2 - 1).latent_dist.mode()
    return float(1.0 / latents.std().clamp_min(1e-6))


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
    from recapture.hub import looks_like_hub_id, resolve_model

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
        with _quiet_dtype_cast_warning():
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
        feature_extractor = _default_feature_extractor()
    for module in (unet, vae, image_encoder):
        module.eval()
    name = Path(config.pretrained.rstrip("/")).name.lower()
    num_frames = config.num_frames or (25 if re.search(r"(^|[-_])xt([-_.]|$)", name) else 14)
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
    feature_extractor = components.feature_extractor or _default_feature_extractor()
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


def _resize_antialiased(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The SVD pipeline's antialiased resize (Gaussian blur then bicubic) for exact conditioning parity."""
    try:
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )
    except ImportError:  # pragma: no cover - private helper renamed upstream
        return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    return _resize_with_antialiasing(images, size)


def clip_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Resize to 224x224 and normalise with CLIP's mean/std exactly as the SVD pipeline does.

    The resize runs in [-1, 1] (as the original implementation) with antialiasing; torch only.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].

    Returns:
        ``(B, 3, 224, 224)`` CLIP pixel values.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise RecaptureError(
            f"clip_preprocess expects images of shape (B, 3, H, W), got {tuple(images.shape)}"
        )
    x = images.float() * 2.0 - 1.0
    x = _resize_antialiased(x, (CLIP_SIZE, CLIP_SIZE))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(images.dtype)
