"""LightningCLI wiring for the Lightning family of ``recapture`` subcommands.

``fit``/``validate``/``test``/``predict`` are Lightning's; ``anchor`` and ``generate`` are methods of
:class:`ReCaptureTrainer`, so they read the same ``model:``/``data:``/``trainer:`` YAML sections
(``recapture anchor --config configs/orbit.yaml --data.video clip.mp4 --output out/``).

The pieces: :mod:`recapture.training.trainer` (the trainer and its subcommands, the config saver),
:mod:`recapture.training.checks` (the ``fit`` config checks), :mod:`recapture.training.fit_setup`
(models, progress bar, checkpoints and run folder before training) and
:mod:`recapture.training.logging_setup` (W&B mode, Lightning's tips); their public names are
importable from here too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from recapture.training.checks import check_fit_config
from recapture.training.fit_setup import (
    place_checkpoints,
    prefer_tqdm_progress,
    prepare_run_folder,
    resolve_models,
)
from recapture.training.logging_setup import ensure_wandb_mode, finish_wandb, quiet_lightning_tips, uses_wandb
from recapture.training.precision import cpu_precision
from recapture.training.trainer import BenchmarkSource, ReCaptureTrainer, RunConfigSaver
from recapture.utils import OneLineParserErrors, RecaptureError

log = logging.getLogger(__name__)

__all__ = [
    "LEADING_OPTIONS",
    "BenchmarkSource",
    "ReCaptureArgumentParser",
    "ReCaptureCLI",
    "ReCaptureTrainer",
    "RunConfigSaver",
    "check_fit_config",
    "ensure_wandb_mode",
    "extra_subcommands",
    "finish_wandb",
    "place_checkpoints",
    "prefer_tqdm_progress",
    "prepare_run_folder",
    "quiet_lightning_tips",
    "resolve_models",
    "run_lightning",
    "uses_wandb",
]

_EXTRA: dict[str, str] = {
    "anchor": "Render the anchor video, validity mask, preview and report for a trajectory (stage 1).",
    "generate": "Generate and SDEdit-refine from saved LoRAs and the cached anchor, without training.",
    "benchmark": "Score ReCapture on Kubric-4D (GCD protocol): a fresh fine-tuning run per scene, sharded over ranks.",
}



def extra_subcommands() -> dict[str, str]:
    """Extra Lightning subcommands and their one-line descriptions."""
    return dict(_EXTRA)



LEADING_OPTIONS = """\
The options people change most (every option is listed below; every YAML key is also a flag):
  --config FILE                   YAML config, e.g. configs/orbit.yaml (repeat to stack overlays)
  --data.video PATH               your video (mp4, mov, avi, webm, gif) or 'example'
  --data.trajectory.preset NAME   orbit, dolly, pan, ...; --data.trajectory.amount sets how far
  --data.trajectory.file FILE     a camera trajectory file instead (`recapture trajectory` writes one)
  --data.size N                   long side of the frames in pixels (multiple of 64; aspect kept),
                                  or '[H, W]' exactly (e.g. '[64, 96]' for recapture-tiny)
  --data.num_frames N             frames of the video used (from --data.start)
  --trainer.max_steps N           fine-tuning steps
  --trainer.default_root_dir DIR  the run folder: outputs, checkpoints, report.json
  --ckpt_path FILE                resume from a checkpoint (DIR/checkpoints/last.ckpt)
  --overwrite                     start over in a run folder that holds a previous run
  --print_config                  print the resolved config and exit"""



class _RawDescriptionHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter with the description printed as written (the options table above)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))



PARSER_MODE = "recapture_yaml"
_registered_modes: set[str] = set()


def load_config_value(text: str) -> Any:
    """jsonargparse's YAML loader, then old config forms migrated (saved runs keep loading).

    An old flat ``depth: {backend: ...}`` section (``config.yaml`` of runs from before depth
    backends became classes) is read as its ``class_path`` form, with one warning saying how to
    write it now (:func:`recapture.depth.base.migrate_flat_depth`).
    """
    from jsonargparse import get_loader

    from recapture.depth.base import migrate_flat_depth_sections

    value = get_loader("yaml")(text)
    if migrate_flat_depth_sections(value):
        log.warning("a depth section in the old form (backend: ...) was read as its class_path form; write it as "
                    "depth: {class_path: PriorDepthSource | FileDepthSource | TransformersDepthSource, init_args: "
                    "{...}} (README, Depth)")
    return value


class ReCaptureArgumentParser(OneLineParserErrors, LightningArgumentParser):
    """LightningCLI's parser with one-line errors (usage only on ``--help``), no option prefixes, and
    config files of older runs migrated on load (:func:`load_config_value`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if PARSER_MODE not in _registered_modes:
            import yaml
            from jsonargparse import set_loader

            set_loader(PARSER_MODE, load_config_value, exceptions=(yaml.YAMLError,))
            _registered_modes.add(PARSER_MODE)
        kwargs.setdefault("parser_mode", PARSER_MODE)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> Any:
        from recapture.depth.base import explain_depth_error  # a wrong data.depth: the value and the choices

        return super().error(explain_depth_error(str(message)), ex)



class ReCaptureCLI(LightningCLI):
    """LightningCLI over :class:`ReCaptureModule` / :class:`ReCaptureDataModule` / :class:`ReCaptureTrainer`."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        commands["anchor"] = {"model", "datamodule"}
        commands["generate"] = {"model", "datamodule"}
        commands["benchmark"] = {"model", "datamodule"}
        return commands

    def _add_subcommands(self, parser: Any, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        for name, sub in self._subcommand_parsers.items():
            # argparse's generated usage lists every one of ~300 options (160 lines) before anything else
            sub.usage = f"recapture {name} --config FILE [options]"
            if name in ("fit", "anchor", "generate"):  # the commands run on a user's own video
                sub.description = f"{(sub.description or '').strip()}\n\n{LEADING_OPTIONS}"
                sub.formatter_class = _RawDescriptionHelpFormatter

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--overwrite", type=bool, nargs="?", const=True, default=False,
            help="fit: start over in a run folder that holds a previous run (its outputs and checkpoints are "
                 "deleted first). Without it such a folder is refused, unless --ckpt_path resumes it.",
        )

    def _section(self) -> tuple[str | None, Any]:
        """The subcommand and its parsed config (run=False: no subcommand level, the whole config)."""
        subcommand = self.config.get("subcommand")
        return subcommand, self.config[subcommand] if subcommand else self.config

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand, section = self._section()
        if "trainer" in section:
            cpu_precision(section["trainer"])  # bf16 on a CPU that emulates it: 32-true
        # before LightningCLI reads --ckpt_path's hyperparameters and anything is instantiated
        if subcommand == "fit":
            self._run_lock = check_fit_config(self.config["fit"])

    def before_instantiate_classes(self) -> None:
        subcommand, section = self._section()
        # anchor and generate log nothing: no W&B notice for them, nor for runs without a W&B logger
        if subcommand not in ("anchor", "generate") and uses_wandb(section.get("trainer", {})):
            ensure_wandb_mode()

    def before_anchor(self) -> None:
        resolve_models(self.model, self.datamodule, svd=False)

    def before_generate(self) -> None:
        resolve_models(self.model, self.datamodule)

    def before_benchmark(self) -> None:
        # the benchmark builds a fresh module, data module and trainer per scene from this parsed config
        self.trainer.benchmark_source = BenchmarkSource(self._parser(self.subcommand), self.config[self.subcommand])

    def before_fit(self) -> None:
        resolve_models(self.model, self.datamodule)
        # end-of-fit callbacks must run in pipeline order whatever their order in the YAML
        from recapture.training.callbacks import StepProgress, pipeline_order

        callbacks = self.trainer.callbacks
        if not any(isinstance(cb, StepProgress) for cb in callbacks):
            callbacks.append(StepProgress())  # lines in log files (prints only when stderr is not a terminal)
        callbacks[:] = pipeline_order(callbacks)
        prefer_tqdm_progress(self.trainer, self.config["fit"])
        place_checkpoints(self.trainer, replace_in_run_folder=True)
        prepare_run_folder(self.trainer, self.config["fit"])

    def after_fit(self) -> None:
        root = Path(self.trainer.default_root_dir)
        print(f"recapture: outputs in {root} (refined.mp4, comparison.mp4, report.json, lora/)")



def run_lightning(args: Sequence[str] | None) -> Any:
    """Run a Lightning subcommand (``fit``, ``anchor``, ...) with ``args`` (None: ``sys.argv``)."""
    from recapture.adaptation.quiet import import_svd_pipeline_quietly
    from recapture.training.datamodule import ReCaptureDataModule
    from recapture.training.module import ReCaptureModule
    from recapture.training.run_folder import release_all

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_lightning_tips()
    import_svd_pipeline_quietly()
    try:
        return ReCaptureCLI(
            ReCaptureModule,
            ReCaptureDataModule,
            trainer_class=ReCaptureTrainer,
            parser_class=ReCaptureArgumentParser,
            parser_kwargs={"prog": "recapture"},
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            args=None if args is None else list(args),
        )
    except RecaptureError as err:
        finish_wandb(failed=True)
        if args is not None:  # in-process callers (tests, notebooks) get the exception
            raise
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        prefix = f"recapture {command}" if command else "recapture"
        print(f"{prefix}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except BaseException:
        finish_wandb(failed=True)
        raise
    finally:
        finish_wandb()
        release_all()  # the run folder's lock (also when the run failed)

