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
