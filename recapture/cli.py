"""The ``recapture`` command line.

Two families of subcommands share one entry point:

* **Lightning commands** (``fit``, ``validate``, ``test``, ``predict`` and the ones the
  :class:`~recapture.training.cli.ReCaptureCLI` adds) are LightningCLI subcommands: they read the
  ``model:`` / ``data:`` / ``trainer:`` sections of ``--config`` YAML files (stackable), and every
  ``__init__`` argument of the module, datamodule and trainer is a flag.
* **Tool commands** (``trajectory``, ``evaluate``, ...) are plain typed functions: their
  parameters are the flags and their docstrings the ``--help`` text; they also accept
  ``--config FILE`` with the same keys.

``cli_main(args)`` runs in-process (tests and notebooks use it) and returns what the command
returns (the LightningCLI object, or the tool function's result).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# name -> "module:function". Imported lazily so that `recapture --help` stays fast.
TOOL_COMMANDS: dict[str, str] = {
    "trajectory": "recapture.commands.trajectory:trajectory",
    "evaluate": "recapture.commands.evaluate:evaluate",
}

# Commands with their own LightningCLI (their own module and data classes): name -> "module:function".
# The function takes the arguments after the command name and ``in_process``.
OWN_CLI_COMMANDS: dict[str, str] = {
    "pretrain": "recapture.training.pretrain.cli:run_pretrain",
    "cache": "recapture.commands.cache:run_cache",
}

# Lightning subcommands: the standard ones plus those the ReCapture trainer adds. Written out here
# (tests/test_cli_help.py checks them against training.cli and the tool functions) so that
# `recapture --help` imports neither Lightning nor torch.
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "Train: masked temporal-LoRA and spatial-LoRA fine-tuning (LightningCLI).",
    "validate": "Run the validation loop (LightningCLI).",
    "test": "Run the test loop (LightningCLI).",
    "predict": "Run the prediction loop (LightningCLI).",
}
EXTRA_LIGHTNING_COMMANDS: dict[str, str] = {
    "anchor": "Render the anchor video, validity mask, preview and report for a trajectory (stage 1).",
    "generate": "Generate and SDEdit-refine from saved LoRAs and the cached anchor, without training.",
    "benchmark": "Score ReCapture on Kubric-4D (GCD protocol): a fresh fine-tuning run per scene, sharded over ranks.",
}
COMMAND_SUMMARIES: dict[str, str] = {
    "pretrain": "Train the project's own small SVD-architecture prior on procedural scenes.",
    "cache": "Show (info) or clear the anchor and latent caches.",
    "trajectory": "Build a camera trajectory (or load one from a file), save it as JSON and draw a PNG preview.",
    "evaluate": "Score prediction video(s) against target video(s); write DIR/metrics.json and DIR/metrics.md.",
}


def _load(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _first_line(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.splitlines()[0] if doc else ""


def _overview() -> str:
    lines = [
        "usage: recapture <command> [options]   (recapture <command> --help for every option)",
        "",
        "Give your own video a new camera trajectory (ReCapture: anchor video -> masked video",
        "fine-tuning of Stable Video Diffusion -> generation and SDEdit refinement -> metrics).",
        "",
        "Lightning commands (read model/data/trainer sections of --config YAML files):",
    ]
    for name, doc in _lightning_commands().items():
        lines.append(f"  {name:<12} {doc}")
    lines.append(f"  {'pretrain':<12} {COMMAND_SUMMARIES['pretrain']}")
    lines += ["", "Tool commands:"]
    for name in TOOL_COMMANDS:
        lines.append(f"  {name:<12} {COMMAND_SUMMARIES[name]}")
    lines.append(f"  {'cache':<12} {COMMAND_SUMMARIES['cache']}")
    return "\n".join(lines)


def _lightning_commands() -> dict[str, str]:
    return {**LIGHTNING_COMMANDS, **EXTRA_LIGHTNING_COMMANDS}


def run_tool(name: str, args: Sequence[str]) -> Any:
    """Parse ``args`` for the tool command ``name`` and call it."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from recapture.utils import OneLineParserErrors

    class ToolParser(OneLineParserErrors, ArgumentParser):
        pass

    func = _load(TOOL_COMMANDS[name])
    parser = ToolParser(
        prog=f"recapture {name}",
        description=(inspect.getdoc(func) or "").split("\nArgs:")[0].strip(),
        exit_on_error=True,
        default_env=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below.")
    parser.add_function_arguments(func, as_group=False, fail_untyped=True)
    cfg = parser.parse_args(list(args))
    kwargs = {k: v for k, v in cfg.as_dict().items() if k not in ("config", "__path__")}
    return func(**kwargs)


def _run_own_cli(name: str, args: Sequence[str], in_process: bool) -> Any:
    """Run a command of :data:`OWN_CLI_COMMANDS` (e.g. ``pretrain``) with the arguments after its name."""
    return _load(OWN_CLI_COMMANDS[name])(list(args), in_process=in_process)


def cli_main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``recapture`` console script; callable in-process with a list of args."""
    in_process = args is not None
    args = list(sys.argv[1:] if args is None else args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args or args[0] in ("-h", "--help", "help"):
        print(_overview())
        return None
    if args[0] in ("-V", "--version"):
        from recapture import __version__

        print(f"recapture {__version__}")
        return None
    command = args[0]
    if command in OWN_CLI_COMMANDS:
        return _run_own_cli(command, args[1:], in_process)
    if command in TOOL_COMMANDS:
        from recapture.utils import RecaptureError

        try:
            return run_tool(command, args[1:])
        except RecaptureError as err:
            if in_process:  # tests and notebooks get the exception
                raise
            print(f"recapture {command}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from err
    if command in _lightning_commands():
        from recapture.training.cli import run_lightning

        # LightningCLI reads sys.argv itself when run from the console (and warns if given both).
        return run_lightning(args if in_process else None)
    print(f"recapture: unknown command {command!r}.\n\n{_overview()}", file=sys.stderr)
    raise SystemExit(2)


def main() -> int:
    """Console-script wrapper: runs :func:`cli_main` and returns exit status 0 (results are not printed)."""
    cli_main()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
