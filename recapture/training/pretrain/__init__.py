"""Pretraining the project's own small video prior of the SVD architecture (``recapture pretrain``).

Two stages, selected by the ``model:`` class of the config, share one data module:

1. :class:`VAEStage`: the temporal-decoder VAE on endless procedural clips (reconstruction + KL);
   exports ``vae/`` with a fitted ``scaling_factor``.
2. :class:`UNetStage`: the spatio-temporal UNet with SVD's EDM objective on latents of a fixed
   pool of clips, cached once by the VAE of stage 1 (safetensors); a fixed random CLIP image
   encoder; exports the complete set in diffusers pipeline layout with a model card and checksums.

Recipes: ``configs/pretrain/`` (``recapture-tiny-vae.yaml`` then ``recapture-tiny-unet.yaml``; a larger
GPU recipe in ``large-vae.yaml`` / ``large-unet.yaml``).
"""

from recapture.training.pretrain.base import LRSchedule, PriorStage
from recapture.training.pretrain.callbacks import ExportPrior, PretrainProgress, verify_checksums
from recapture.training.pretrain.data import LatentPool, PretrainDataModule
from recapture.training.pretrain.unet import UNetStage
from recapture.training.pretrain.vae import VAEStage

__all__ = [
    "ExportPrior",
    "LRSchedule",
    "LatentPool",
    "PretrainDataModule",
    "PretrainProgress",
    "PriorStage",
    "UNetStage",
    "VAEStage",
    "verify_checksums",
]
