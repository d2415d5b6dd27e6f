"""``recapture pretrain``: a LightningCLI over the prior's stage modules and :class:`PretrainDataModule`.

The command is LightningCLI's ``fit`` with its own classes, so it reads the same YAML sections as
``recapture fit`` (``model:`` with a ``class_path`` choosing the stage, ``data:``, ``trainer:``),
every option is a flag, ``--ckpt_path <run>/checkpoints/last.ckpt`` resumes, and
``recapture pretrain --help`` lists everything::

    recapture pretrain --config configs/pretrain/recapture-tiny-vae.yaml
    recapture pretrain --config configs/pretrain/recapture-tiny-unet.yaml
    recapture pretrain --config configs/pretrain/recapture-tiny-vae.yaml --ckpt_path runs/prior-vae/checkpoints/last.ckpt
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import torch
from lightning.pytorch.cli import LightningCLI

from recapture.adaptation.quiet import import_svd_pipeline_quietly
from recapture.training.cli import (
    ReCaptureArgumentParser,
    RunConfigSaver,
    ensure_wandb_mode,
    finish_wandb,
    place_checkpoints,
    quiet_lightning_tips,
    uses_wandb,
)
from recapture.training.precision import cpu_precision
from recapture.training.pretrain.base import PriorStage
from recapture.training.pretrain.callbacks import ExportPrior, PretrainProgress
from recapture.training.pretrain.data import PretrainDataModule
from recapture.utils import RecaptureError

DESCRIPTION = (
    "Train the project's own small SVD-architecture video prior on procedural scenes: the temporal VAE "
    "(model.class_path: recapture.training.pretrain.VAEStage), then the UNet on cached latents "
    "(recapture.training.pretrain.UNetStage, model.vae_dir = the VAE stage's export). The last stage writes "
    "the complete set (diffusers pipeline layout) with model_card.md and checksums.json."
)


class PretrainCLI(LightningCLI):
    """LightningCLI whose only subcommand is ``fit``, over the stage modules and :class:`PretrainDataModule`."""

    command_line: str = "recapture pretrain"

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": LightningCLI.subcommands()["fit"]}

    def _add_subcommands(self, parser: Any, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        for sub in self._subcommand_parsers.values():
            sub.prog = "recapture pretrain"  # `fit` is implied: the usage line shows what users type

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--torch_threads", type=Optional[int], default=None,
            help="torch intra-op threads of this process (null: torch's default, all cores). On a machine shared "
            "with other jobs 1 is several times faster than 2 on 2 cores (no thread waits on a busy core).",
        )

    def before_instantiate_classes(self) -> None:
        section = self.config.get("fit", self.config)  # run=False (tests, notebooks): no subcommand level
        threads = section.get("torch_threads")
        if threads is not None:
            if threads < 1:
                raise RecaptureError(f"--torch_threads={threads} must be >= 1 (or null for torch's default)")
            torch.set_num_threads(threads)
        cpu_precision(section["trainer"])  # bf16 on a CPU that emulates it: 32-true
        if uses_wandb(section.get("trainer", {})):
            ensure_wandb_mode()

    def before_fit(self) -> None:
        callbacks = self.trainer.callbacks
        if not any(isinstance(cb, PretrainProgress) for cb in callbacks):
            callbacks.append(PretrainProgress())
        if not any(isinstance(cb, ExportPrior) for cb in callbacks):
            callbacks.append(ExportPrior())
        for cb in callbacks:
            if isinstance(cb, ExportPrior):
                cb.command = self.command_line
        # the export reads the progress history: it must run after the progress callback
        callbacks.sort(key=lambda cb: isinstance(cb, ExportPrior))
        place_checkpoints(self.trainer)

    def after_fit(self) -> None:
        export = next((cb for cb in self.trainer.callbacks if isinstance(cb, ExportPrior)), None)
        if export is not None and export.written is not None:
            print(f"recapture pretrain: {self.model.stage} stage exported to {export.written}")


def run_pretrain(args: Sequence[str], in_process: bool = True) -> Any:
    """Run ``recapture pretrain`` with ``args`` (the arguments after ``pretrain``); returns the CLI object.

    Args:
        args: e.g. ``["--config", "configs/pretrain/recapture-tiny-vae.yaml", "--trainer.max_steps", "10"]``.
        in_process: raise user errors (tests, notebooks) instead of printing one line and exiting with 2.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_lightning_tips()
    import_svd_pipeline_quietly()
    args = list(args)
    PretrainCLI.command_line = shlex.join(["recapture", "pretrain", *args])
    try:
        with warnings.catch_warnings():
            # the console's sys.argv holds the same arguments: LightningCLI would warn about both
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            return PretrainCLI(
                PriorStage,
                PretrainDataModule,
                subclass_mode_model=True,
                parser_class=ReCaptureArgumentParser,
                save_config_callback=RunConfigSaver,
                save_config_kwargs={"overwrite": True},
                seed_everything_default=0,
                auto_configure_optimizers=False,  # each stage configures its own (model.optimizer)
                parser_kwargs={"fit": {"prog": "recapture pretrain", "description": DESCRIPTION}},
                args=["fit", *args],
            )
    except RecaptureError as err:
        finish_wandb(failed=True)
        if in_process:
            raise
        print(f"recapture pretrain: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except BaseException:
        finish_wandb(failed=True)
        raise
    finally:
        finish_wandb()
