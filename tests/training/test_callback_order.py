"""Output callbacks run in pipeline order from their declared dependencies, whatever the YAML order."""

from __future__ import annotations

import random

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from recapture.training.callbacks import (
    ExportLoRA,
    GenerateVideo,
    LogVideos,
    MetricsCallback,
    RunReport,
    SDEditRefine,
    StepTimer,
    pipeline_order,
)
from recapture.training.results import RunResult
from recapture.utils import RecaptureError

PIPELINE = [StepTimer, ExportLoRA, GenerateVideo, SDEditRefine, LogVideos, MetricsCallback, RunReport]


def test_every_shuffle_gives_the_pipeline_order() -> None:
    rng = random.Random(0)
    for _ in range(20):
        callbacks = [cls() for cls in PIPELINE] + [ModelCheckpoint()]
        rng.shuffle(callbacks)
        ordered = pipeline_order(callbacks)
        assert isinstance(ordered[0], ModelCheckpoint)  # other callbacks first, output callbacks after
        position = {type(cb).__name__: i for i, cb in enumerate(ordered)}
        for cb in ordered[1:]:  # each runs after every callback it reads
            assert all(position[dep] < position[type(cb).__name__] for dep in cb.after), [type(c) for c in ordered]
        assert position["GenerateVideo"] < position["SDEditRefine"] < position["MetricsCallback"] < position["RunReport"]
    # the documented YAML order is kept as it is
    callbacks = [cls() for cls in PIPELINE]
    assert pipeline_order(callbacks) == callbacks


def test_optional_callbacks_can_be_left_out() -> None:
    ordered = pipeline_order([RunReport(), GenerateVideo()])
    assert [type(cb) for cb in ordered] == [GenerateVideo, RunReport]


@pytest.mark.parametrize("cls", [SDEditRefine, MetricsCallback])
def test_a_missing_producer_is_named(cls: type) -> None:
    with pytest.raises(RecaptureError, match="needs GenerateVideo in trainer.callbacks"):
        pipeline_order([cls(), RunReport()])


def test_run_result_lists_its_videos_in_order() -> None:
    import torch

    result = RunResult(refined=torch.zeros(1), generated=torch.ones(1))
    assert list(result.videos()) == ["generated", "refined"]
    assert RunResult().videos() == {} and RunResult().timings == {}


def test_step_progress_prints_steady_lines_with_total_and_eta(caplog) -> None:  # noqa: ANN001
    """In a log file (no terminal) training says where it is at a steady cadence."""
    import logging

    import torch
    from lightning.pytorch import LightningModule, Trainer

    from recapture.training.callbacks import StepProgress

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            return (self.w * batch[0]).pow(2).mean()

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):  # noqa: ANN201
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 1)), batch_size=1)

    progress = StepProgress(every_n_steps=4, when="always")
    with caplog.at_level(logging.INFO, logger="recapture.training.callbacks"):
        Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[progress]).fit(Tiny())
    assert [line.split(" |")[0].split(" loss")[0] for line in progress.lines] == [
        "step 1/10 (10%)", "step 4/10 (40%)", "step 8/10 (80%)", "step 10/10 (100%)"]
    assert all("s/step, elapsed" in line and "eta" in line for line in progress.lines)
    assert progress.lines[-1] in caplog.text
    assert not StepProgress(when="never").active()
