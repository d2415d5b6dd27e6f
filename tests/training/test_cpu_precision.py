"""bf16 on a CPU that emulates it falls back to 32-true, with one warning; nothing else is touched."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

import recapture.training.precision as precision
from recapture.training.precision import cpu_precision, runs_on_cpu

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulated_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(precision.KEEP_ENV, raising=False)


def test_bf16_on_an_emulating_cpu_becomes_32_true_with_one_warning(emulated_bf16, caplog) -> None:
    for accelerator in ("cpu", "auto", None):
        trainer = Namespace(precision="bf16-mixed", accelerator=accelerator)
        with caplog.at_level(logging.WARNING, logger="recapture"):
            assert cpu_precision(trainer) == "bf16-mixed"
        assert trainer.precision == "32-true"
    warnings = [r.message for r in caplog.records if "no bfloat16 instructions" in r.message]
    assert len(warnings) == 3 and "bf16-mixed" in warnings[0] and "--trainer.precision 32-true" in warnings[0]
    trainer = {"precision": "bf16-true", "accelerator": "cpu"}  # a plain dict works too
    assert cpu_precision(trainer) == "bf16-true" and trainer["precision"] == "32-true"


def test_nothing_changes_off_the_cpu_with_bf16_instructions_or_when_asked(emulated_bf16, monkeypatch) -> None:
    for trainer in (Namespace(precision="bf16-mixed", accelerator="gpu"),  # a GPU run is never touched
                    Namespace(precision="32-true", accelerator="cpu"),
                    Namespace(precision="16-mixed", accelerator="cpu")):
        before = trainer.precision
        assert cpu_precision(trainer) is None and trainer.precision == before
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer = Namespace(precision="bf16-mixed", accelerator="auto")  # auto picks the GPU
    assert cpu_precision(trainer) is None and trainer.precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(precision.KEEP_ENV, "1")
    trainer = Namespace(precision="bf16-mixed", accelerator="cpu")
    assert cpu_precision(trainer) is None and trainer.precision == "bf16-mixed"
    monkeypatch.delenv(precision.KEEP_ENV)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert cpu_precision(trainer) is None and trainer.precision == "bf16-mixed"


def test_runs_on_cpu_reads_the_accelerator_setting(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runs_on_cpu("cpu") and runs_on_cpu("CPU")
    assert not runs_on_cpu("gpu") and not runs_on_cpu("cuda") and not runs_on_cpu("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runs_on_cpu("auto") and runs_on_cpu(None)


def test_the_fit_command_runs_and_records_32_true(emulated_bf16, tmp_path, monkeypatch) -> None:
    """Through the real CLI: orbit-style bf16-mixed on an emulating CPU trains in 32-true, config.yaml says so."""
    from recapture.cli import cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--trainer.precision", "bf16-mixed",
            "--trainer.accelerator", "cpu", "--model.components.tiny", "true", "--trainer.max_steps", "2",
            "--model.sampling.num_inference_steps", "1", "--model.refine.num_inference_steps", "1",
            "--data.num_frames", "3", "--data.size", "64", "--data.augment.pool_size", "1",
            "--data.augment.condition_draws", "1", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"),
            "--data.anchor.cache_dir", str(tmp_path / "cache" / "anchors"),
            "--data.latent_cache_dir", str(tmp_path / "cache" / "latents")]
    fit = cli_main(args)
    assert str(fit.trainer.precision) == "32-true"
    assert "precision: 32-true" in (tmp_path / "run" / "config.yaml").read_text()


def test_pretrain_falls_back_too(emulated_bf16) -> None:
    from recapture.training.pretrain import PretrainDataModule, PriorStage
    from recapture.training.pretrain.cli import PretrainCLI

    config = REPO / "configs" / "pretrain" / "recapture-tiny-vae.yaml"  # bf16-mixed on the CPU
    cli = PretrainCLI(PriorStage, PretrainDataModule, subclass_mode_model=True, run=False, save_config_callback=None,
                      auto_configure_optimizers=False, args=["--config", str(config)])
    assert str(cli.trainer.precision) == "32-true"
