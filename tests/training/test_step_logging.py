"""Logging from the training step never makes the host wait for the device (issue: no per-step sync).

A CPU run cannot see a GPU sync, so the step's loss is made an :class:`_OnDevice` tensor: everything
computed from it stays one (Lightning's clones and detaches included) until it is copied to the host,
and every call that would wait for a GPU (``item``, ``cpu``, ``__float__``, ...) on it is recorded. A
number logged from the step would be copied to the device by Lightning (``torch.tensor(x,
device=...)``): those calls are recorded too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

import recapture.training.module as module_mod
from recapture.adaptation import ComponentsConfig, EDMConfig
from recapture.adaptation.encoding import AugmentConfig
from recapture.training.datamodule import ReCaptureDataModule
from recapture.training.module import ReCaptureModule, StepSchedule

_SYNCS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "nonzero", "cpu", "numpy"}


class _OnDevice(torch.Tensor):
    """A tensor standing for one on a GPU: host-bound calls on it are recorded; ``cpu()`` gives a host tensor."""

    events: list[tuple[int, str]] = []
    step = -1

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        name = getattr(func, "__name__", str(func))
        if name in _SYNCS:
            cls.events.append((cls.step, name))
        out = super().__torch_function__(func, types, args, kwargs or {})
        return out.as_subclass(torch.Tensor) if name == "cpu" and isinstance(out, torch.Tensor) else out


class _DeviceCopies(torch.overrides.TorchFunctionMode):
    """Records ``torch.tensor(..., device=...)``: how Lightning turns a logged number into a device tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is torch.tensor and (kwargs or {}).get("device") is not None:
            self.steps.append(_OnDevice.step)
        return func(*args, **(kwargs or {}))


class _Steps(Callback):
    """Numbers the recorded events by step (Lightning's end-of-batch work counts as its step's)."""

    def on_train_batch_start(self, trainer, *args) -> None:  # noqa: ANN001
        _OnDevice.step = trainer.global_step

    def on_train_end(self, trainer, *args) -> None:  # noqa: ANN001
        _OnDevice.step = -1


def test_the_progress_bar_losses_reach_the_host_every_log_every_n_steps_only(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    real = module_mod.step_loss

    def on_device(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss.as_subclass(_OnDevice))

    monkeypatch.setattr(module_mod, "step_loss", on_device)
    _OnDevice.events, _OnDevice.step = [], -1
    seed_everything(0, verbose=False)
    module = ReCaptureModule(components=ComponentsConfig(pretrained=None, variant=None, tiny=True),
                             objective=EDMConfig(conditioning_dropout=0.0), schedule=StepSchedule(1, 1),
                             gradient_checkpointing=False)
    data = ReCaptureDataModule(video="example", num_frames=3, size=64, augment=AugmentConfig(pool_size=1, condition_draws=1),
                               latent_cache_dir=None, output_dir=str(tmp_path / "anchor"))
    data.anchor.cache_dir = None
    trainer = Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False,
                      enable_progress_bar=True, enable_model_summary=False, callbacks=[_Steps()],
                      default_root_dir=str(tmp_path), log_every_n_steps=3)
    copies = _DeviceCopies()
    with copies:
        trainer.fit(module, data)
    # temporal steps 0, 2, 4, 6 and spatial 1, 3, 5, 7: each loss goes to the host on its 1st and 4th step
    assert _OnDevice.events == [(0, "cpu"), (1, "cpu"), (6, "cpu"), (7, "cpu")]
    # no number was logged (each would be copied to the device at every step); only AdamW may create
    # its state on the device, once, at the first step of each kind (torch 2.13 does, 2.11 does not)
    assert set(s for s in copies.steps if s >= 0) <= {0, 1}
    bar = trainer.progress_bar_metrics
    assert set(bar) == {"loss_temporal", "loss_spatial"} and all(isinstance(v, float) for v in bar.values())
    assert {"train/loss_temporal", "train/loss_spatial", "train/loss", "train/lr"} <= set(trainer.callback_metrics)


def test_the_control_a_device_loss_on_the_progress_bar_waits_every_step() -> None:
    """What the recorders see when a step logs its device loss with ``prog_bar=True`` (as it used to)
    and a Python number (as the learning rate was)."""
    from lightning.pytorch import LightningModule

    class Plain(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            loss = (self.w * batch[0]).pow(2).mean().as_subclass(_OnDevice)
            self.log("loss", loss, prog_bar=True)
            self.log("lr", 0.01)
            return loss

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):  # noqa: ANN201
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 1)), batch_size=1)

    _OnDevice.events, _OnDevice.step = [], -1
    copies = _DeviceCopies()
    with copies:
        Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=True,
                enable_model_summary=False, callbacks=[_Steps()]).fit(Plain())
    assert {s for s, name in _OnDevice.events if name == "item"} == {0, 1, 2, 3}
    assert {0, 1, 2, 3} <= set(copies.steps)  # the logged number goes to the device at every step


@pytest.mark.parametrize("value", [0.25, torch.tensor(0.5)])
def test_host_value_makes_numbers_host_tensors(value) -> None:  # noqa: ANN001
    from recapture.training.step_logging import host_value

    out = host_value(value)
    assert isinstance(out, torch.Tensor) and out.device.type == "cpu" and float(out) == float(value)
