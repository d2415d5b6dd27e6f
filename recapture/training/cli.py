"""LightningCLI wiring for the Lightning family of ``recapture`` subcommands.

``fit``/``validate``/``test``/``predict`` are Lightning's; ``anchor`` and ``generate`` are methods of
:class:`ReCaptureTrainer`, so they read the same ``model:``/``data:``/``trainer:`` YAML sections
(``recapture anchor --config configs/orbit.yaml --data.video clip.mp4 --output out/``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from recapture.benchmark.sweep import BenchmarkSettings
from recapture.training.precision import cpu_precision
from recapture.utils import OneLineParserErrors, RecaptureError, check_output_folder

log = logging.getLogger("recapture")

_EXTRA: dict[str, str] = {
    "anchor": "Render the anchor video, validity mask, preview and report for a trajectory (stage 1).",
    "generate": "Generate and SDEdit-refine from saved LoRAs and the cached anchor, without training.",
    "benchmark": "Score ReCapture on Kubric-4D (GCD protocol): a fresh fine-tuning run per scene, sharded over ranks.",
}


def extra_subcommands() -> dict[str, str]:
    """Extra Lightning subcommands and their one-line descriptions."""
    return dict(_EXTRA)


@dataclass(frozen=True)
class BenchmarkSource:
    """What ``recapture benchmark`` re-instantiates per scene: the subcommand's parser and parsed config."""

    parser: Any
    config: Any


class ReCaptureTrainer(Trainer):
    """Lightning ``Trainer`` with recapture's extra subcommands.

    The files a subcommand wrote are kept in ``trainer.command_result`` (``cli_main`` returns the
    LightningCLI object, whose ``trainer`` this is).
    """

    command_result: dict[str, Path] | None = None
    # ``benchmark`` builds a fresh run per scene from the parsed config: ReCaptureCLI sets this before
    # running it (the subcommand parser and the parsed, not instantiated, config)
    benchmark_source: BenchmarkSource | None = None

    def anchor(self, model: LightningModule, datamodule: Any, output: Path | None = None) -> dict[str, Path]:
        """Render the anchor video, validity mask, preview and report for a trajectory (stage 1).

        Args:
            model: unused (the anchor needs no diffusion model).
            datamodule: the data module holding the video, depth and trajectory settings.
            output: output folder; default ``trainer.default_root_dir``. Receives ``anchor.mp4``,
                ``mask.mp4``, ``preview.mp4``, ``trajectory.json`` and ``report.json``.
        """
        from recapture.anchor import write_anchor_outputs

        out = Path(output) if output is not None else Path(self.default_root_dir)
        check_output_folder(out, "--output" if output is not None else "--trainer.default_root_dir")  # before the work
        result = datamodule.build_anchor(device=self.strategy.root_device)
        files = write_anchor_outputs(result, out)
        report = result.report
        self.command_result = files
        print(
            f"anchor: {report['num_frames']} frames {report['width']}x{report['height']}, coverage mean "
            f"{report['coverage_mean']:.1%} (min {report['coverage_min']:.1%}), depth {report['depth_source']} -> {out}"
        )
        return files

    def generate(
        self,
        model: LightningModule,
        datamodule: Any,
        lora_dir: Path | None = None,
        output: Path | None = None,
        seed: int | None = None,
        refine_strength: float | None = None,
    ) -> dict[str, Path]:
        """Generate and SDEdit-refine from saved LoRAs and the cached anchor, without training.

        Args:
            model: the module (its ``components``, ``lora``, ``sampling`` and ``refine`` settings are used).
            datamodule: the data module (video and trajectory settings select the cached anchor).
            lora_dir: folder with ``spatial/`` and ``temporal/`` LoRAs; default ``<default_root_dir>/lora``.
            output: output folder; default ``<default_root_dir>/generate_seed<seed>``.
            seed: sampling seed (default ``model.sampling.seed``); the refinement uses it too.
            refine_strength: SDEdit strength (default ``model.refine.strength``; 0 skips refinement).
        """
        from dataclasses import replace

        from recapture.adaptation import load_lora
        from recapture.io import frames_digest, write_video
        from recapture.training.callbacks import generate_video, refine_video, write_refined
        from recapture.utils import write_json

        root = Path(self.default_root_dir)
        lora_dir = Path(lora_dir) if lora_dir is not None else root / "lora"
        sampling = model.sampling if seed is None else replace(model.sampling, seed=seed)
        refine = replace(model.refine, seed=sampling.seed)
        if refine_strength is not None:
            refine = replace(refine, strength=refine_strength)
        out = Path(output) if output is not None else root / f"generate_seed{sampling.seed}"
        check_output_folder(out, "--output" if output is not None else "--trainer.default_root_dir")  # before the work
        device = self.strategy.root_device  # the device the user chose (--trainer.accelerator/devices)
        components = model.load_parts(device=device, precision=str(self.precision))
        for name in ("spatial", "temporal"):
            load_lora(model.unet, name, lora_dir / name)
        anchor = datamodule.build_anchor(device=device)
        model.eval()
        with torch.no_grad(), components.placed(device, ("unet",)):
            generated, t_gen = generate_video(components, anchor, sampling)
            refined, t_ref = refine_video(components, generated, anchor, refine)
        files = {"generated": write_video(out / "generated.mp4", generated, datamodule.video_fps)}
        files.update(write_refined(out, anchor, refined, datamodule.video_fps))
        report = {
            "seed": sampling.seed,
            "refine_strength": refine.strength,
            "lora_dir": str(lora_dir),
            "timings_s": {"generate_s": t_gen, "refine_s": t_ref},
            "frames_sha256": {"generated": frames_digest(generated), "refined": frames_digest(refined)},
            "files": {k: str(v) for k, v in files.items()},
        }
        files["report"] = write_json(out / "report.json", report)
        self.command_result = files
        print(f"generate: {t_gen:.1f} s, refine: {t_ref:.1f} s (seed {sampling.seed}, strength {refine.strength}) -> {out}")
        return files

    def benchmark(
        self, model: LightningModule, datamodule: Any, kubric: BenchmarkSettings = BenchmarkSettings()
    ) -> dict[str, Any] | None:
        """Score ReCapture on Kubric-4D (GCD protocol): a fresh fine-tuning run per scene, sharded over ranks.

        Args:
            model: template only: every scene gets a fresh module built from the same ``model:`` config.
            datamodule: template only: every scene gets a fresh data module from the same ``data:`` config.
            kubric: scenes, controls, mode, resolution, output folder, depth source, baselines, W&B
                group, ... (see :class:`recapture.benchmark.sweep.BenchmarkSettings`).
        """
        from recapture.training.scene_runner import run_benchmark

        return run_benchmark(self, kubric)


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config as ``<default_root_dir>/config.yaml`` and log it to the loggers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from recapture.utils import atomic_path

        path = Path(trainer.default_root_dir) / self.config_filename
        config = self.config
        if config.get("overwrite"):  # rerunning the saved config must not delete a run by itself
            config = config.clone()
            config.overwrite = False
        with atomic_path(path) as tmp:
            self.parser.save(config, str(tmp), skip_none=False, overwrite=True, multifile=False)
        for lg in trainer.loggers:
            lg.log_hyperparams(self.config.as_dict())


LEADING_OPTIONS = """\
The options people change most (every option is listed below; every YAML key is also a flag):
  --config FILE                   YAML config, e.g. configs/orbit.yaml (repeat to stack overlays)
  --data.video PATH               your video (mp4, mov, avi, webm, gif) or 'example'
  --data.trajectory.preset NAME   orbit, dolly, pan, ...; --data.trajectory.amount sets how far
  --data.trajectory.file FILE     a camera trajectory file instead (`recapture trajectory` writes one)
  --data.size N                   long side of the frames in pixels (multiple of 64; aspect kept)
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


class ReCaptureArgumentParser(OneLineParserErrors, LightningArgumentParser):
    """LightningCLI's parser with one-line errors (usage only on ``--help``) and no option prefixes."""

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


def prefer_tqdm_progress(trainer: Trainer, config: Any = None) -> None:
    """Use Lightning's tqdm progress bar instead of its Rich default (unless the config asks for Rich).

    The end-of-fit callbacks sample with their own tqdm bars while the training bar is still open;
    under Rich's live display those writes go through Rich's stderr proxy, which recurses without
    end in a Jupyter kernel (RecursionError) and garbles terminals. tqdm bars nest cleanly.
    """
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    trainer_config = config.get("trainer") if config is not None else None
    asked = trainer_config is not None and "RichProgressBar" in str(trainer_config.get("callbacks"))
    callbacks = trainer.callbacks
    for i, cb in enumerate(callbacks):
        if isinstance(cb, RichProgressBar) and not asked:
            callbacks[i] = TQDMProgressBar()


def resolve_models(model: Any, datamodule: Any, svd: bool = True) -> None:
    """Find every model the run needs before any heavy work (local directory, hub cache or download).

    A missing model stops the command at once with one line naming it and how to get it
    (:mod:`recapture.hub`), instead of failing after the anchor has been rendered.

    Args:
        model: the :class:`~recapture.training.module.ReCaptureModule` (its SVD weights).
        datamodule: the :class:`~recapture.training.datamodule.ReCaptureDataModule` (its depth model).
        svd: also resolve the SVD weights (not needed by ``anchor``).
    """
    from recapture.adaptation import resolve_components

    if datamodule is not None and datamodule.needs_depth_model():
        datamodule.depth.resolve_weights()
    if svd and model is not None and not model.components_config.tiny:
        resolve_components(model.components_config)


def place_checkpoints(trainer: Trainer, replace_in_run_folder: bool = False) -> None:
    """Checkpoints without an explicit ``dirpath`` go to ``<default_root_dir>/checkpoints`` with ``last.ckpt``.

    (Lightning would otherwise put them under the logger's folder, e.g. ``./<wandb project>/<id>/``.)
    They are written atomically (:class:`~recapture.training.run_folder.AtomicCheckpointIO`).

    Args:
        trainer: the trainer whose ``ModelCheckpoint`` callbacks are placed.
        replace_in_run_folder: inside the run folder, a checkpoint replaces a file of the same name instead
            of Lightning's ``last-v1.ckpt``, so ``last.ckpt`` is always the latest (``fit`` sets it: its run
            folder is locked and never reused silently, see :mod:`recapture.training.run_folder`).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recapture.training.run_folder import install_atomic_checkpoint_io, is_remote

    root = Path(trainer.default_root_dir)
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint):
            if cb.dirpath is None:
                cb.dirpath = str(root / "checkpoints")
            if cb.save_last is None:
                cb.save_last = True
            if (replace_in_run_folder and not is_remote(cb.dirpath) and _inside(Path(cb.dirpath), root)
                    and hasattr(cb, "_enable_version_counter")):
                cb._enable_version_counter = False
    install_atomic_checkpoint_io(trainer)


def _inside(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


def check_fit_config(config: Any) -> Any:
    """Refuse, before anything is instantiated, a ``fit`` that would do nothing or cannot work.

    Checks the step limits, ``data.num_frames``, the learning rate and ``--ckpt_path`` (complete and
    loadable), then locks the run folder (``trainer.default_root_dir``) and refuses one that holds a
    previous run unless ``--overwrite`` or ``--ckpt_path`` is given. Every refusal is one
    :class:`RecaptureError` line naming the value and the fix.

    Returns:
        the :class:`~recapture.training.run_folder.RunLock` (None on ranks other than 0).
    """
    import os

    from recapture.training import run_folder

    max_steps = config.get("trainer.max_steps")
    if max_steps is not None and max_steps == 0:
        raise RecaptureError(
            "--trainer.max_steps 0 trains nothing: give a positive number of steps (or -1 for no step limit)")
    if max_steps is not None and max_steps < -1:
        raise RecaptureError(
            f"--trainer.max_steps {max_steps} is negative: give a positive number of steps (or -1 for no step limit)")
    max_epochs = config.get("trainer.max_epochs")
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise RecaptureError(
            f"--trainer.max_epochs {max_epochs} trains nothing: give a positive number (or -1 for no epoch limit)")
    limit = config.get("trainer.limit_train_batches")
    if limit is not None and not isinstance(limit, bool) and limit <= 0:
        raise RecaptureError(
            f"--trainer.limit_train_batches {limit} trains nothing: give a positive count or fraction (or leave it out)")
    num_frames = config.get("data.num_frames")
    if isinstance(num_frames, int) and num_frames < 2:
        raise RecaptureError(
            f"--data.num_frames {num_frames}: fine-tuning a video model needs at least 2 frames "
            "(SVD uses 14, or 25 for img2vid-xt); give --data.num_frames 2 or more")
    lr = _learning_rate(config.get("model.optimizer"))
    if lr is not None and lr < 0:
        raise RecaptureError(
            f"--model.optimizer.init_args.lr {lr} is negative: give a positive learning rate (the paper uses 5e-4)")

    ckpt_path = config.get("ckpt_path")
    state = None
    if ckpt_path is not None:
        state = run_folder.check_checkpoint(ckpt_path, weights_only=config.get("weights_only"))
    if state is not None and isinstance(max_steps, int) and max_steps > 0:
        step = state.get("global_step")
        if isinstance(step, int) and step >= max_steps:
            raise RecaptureError(
                f"--ckpt_path {ckpt_path} is already at step {step} and --trainer.max_steps is {max_steps}: "
                f"nothing to train; give --trainer.max_steps above {step}")
    del state

    root = config.get("trainer.default_root_dir") or os.getcwd()
    if run_folder.is_remote(root) or run_folder.process_rank() != 0:
        return None
    lock = run_folder.lock_run_folder(root)
    try:
        found = run_folder.previous_run(root)
        if found and not config.get("overwrite") and ckpt_path is None:
            run_folder.refuse_reuse(Path(root), found)
    except BaseException:
        lock.release()
        raise
    return lock


def _learning_rate(optimizer: Any) -> float | None:
    """``lr`` of an optimizer config (``class_path``/``init_args``), if given."""
    init_args = getattr(optimizer, "init_args", None) if optimizer is not None else None
    lr = getattr(init_args, "lr", None) if init_args is not None else None
    return lr if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None


def prepare_run_folder(trainer: Trainer, config: Any) -> None:
    """With ``--overwrite``, delete the previous run's outputs and checkpoints before training (rank 0).

    Runs after the models are resolved, so that a run refused for a missing model deletes nothing.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recapture.training import run_folder

    if not config.get("overwrite") or run_folder.process_rank() != 0:
        return
    root = Path(trainer.default_root_dir)
    if run_folder.is_remote(root):
        return
    ckpt_dirs = [cb.dirpath for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    ckpt_path = config.get("ckpt_path")
    keep = ckpt_path if ckpt_path is not None and Path(str(ckpt_path)).is_file() else None
    deleted = run_folder.clear_previous_run(root, [d for d in ckpt_dirs if not run_folder.is_remote(d)], keep=keep)
    if deleted:
        log.info("--overwrite: deleted the previous run's %s in %s", ", ".join(deleted), root)


def finish_wandb(failed: bool = False) -> None:
    """Close the process's W&B run (if any), so that the next command in this process starts its own.

    Runs after every Lightning command, also when it fails or is interrupted (Lightning itself
    leaves the run open, and a later ``WandbLogger`` would silently reuse it).
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def uses_wandb(trainer: Any) -> bool:
    """Whether a parsed ``trainer:`` section has a W&B logger (``WandbLogger``, alone or in a list)."""
    return "WandbLogger" in str(trainer.get("logger"))


def ensure_wandb_mode() -> str:
    """Run W&B offline when no credentials are configured, and say how to sync later.

    Returns the mode in force (``online``/``offline``/whatever ``WANDB_MODE`` says).
    """
    import os

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    log.warning(
        "W&B: no credentials found (WANDB_API_KEY or `wandb login`), logging offline to ./wandb. "
        "Upload later with `wandb sync wandb/offline-run-*`, or use --config configs/loggers/csv.yaml."
    )
    return "offline"


def _netrc_has_wandb() -> bool:
    import netrc
    import os

    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return auth is not None


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


def quiet_lightning_tips() -> None:
    """Silence Lightning's advertising and a warning that is wrong for us (idempotent).

    * "💡 Tip: ... litlogger ..." on every trainer;
    * "Found N module(s) in eval mode at the start of training": the frozen SVD base is in eval
      mode on purpose (only the LoRAs train; dropout and norms of the base stay in inference mode).
    """
    import warnings

    target = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in target.filters):
        target.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


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

