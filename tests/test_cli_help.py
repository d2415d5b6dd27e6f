"""`recapture --help` is fast: it lists every command without importing Lightning or torch."""

from __future__ import annotations

import inspect
import subprocess
import sys

from recapture import cli


def test_help_imports_neither_lightning_nor_torch() -> None:
    code = ("import sys; from recapture.cli import cli_main; cli_main(['--help']); "
            "print('HEAVY', sorted(m for m in ('lightning', 'torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "HEAVY []" in out, out.splitlines()[-1]
    for name in ("fit", "anchor", "generate", "benchmark", "pretrain", "trajectory", "evaluate", "cache"):
        assert f"  {name} " in out, name


def test_written_out_summaries_match_their_sources() -> None:
    from recapture.training.cli import extra_subcommands

    assert extra_subcommands() == cli.EXTRA_LIGHTNING_COMMANDS
    for name, target in cli.TOOL_COMMANDS.items():
        assert cli.COMMAND_SUMMARIES[name] == inspect.getdoc(cli._load(target)).splitlines()[0], name
    assert set(cli.OWN_CLI_COMMANDS) <= set(cli.COMMAND_SUMMARIES)
