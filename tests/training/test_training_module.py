"""ReCaptureModule details: step schedule, LoRA precision, checkpoint contents."""

from __future__ import annotations

import pytest
import torch

from recapture.adaptation import ComponentsConfig, adapter_parameters
from recapture.training.module import ReCaptureModule, StepSchedule
from recapture.utils import RecaptureError


def test_schedule_alternates_and_orders() -> None:
    assert [StepSchedule(1, 1).kind(i) for i in range(4)] == ["temporal", "spatial"] * 2
    assert [StepSchedule(2, 1).kind(i) for i in range(6)] == ["temporal", "temporal", "spatial"] * 2
    s = StepSchedule(1, 2, order="spatial_first")
    assert [s.kind(i) for i in range(6)] == ["spatial", "spatial", "temporal"] * 2
    assert {StepSchedule(1, 0).kind(i) for i in range(5)} == {"temporal"}
    with pytest.raises(RecaptureError, match="positive sum"):
        ReCaptureModule(schedule=StepSchedule(0, 0))


def test_lora_weights_are_fp32_over_half_precision_weights() -> None:
    module = ReCaptureModule(components=ComponentsConfig(pretrained=None, variant=None, tiny=True, dtype="float16"))
    unet = module.load_parts().unet
    base = [p for n, p in unet.named_parameters() if "lora_" not in n]
    assert all(p.dtype == torch.float16 for p in base)
    for name in ("spatial", "temporal"):
        params = adapter_parameters(unet, name)
        assert params and all(p.dtype == torch.float32 for p in params)


def test_checkpoint_keeps_only_lora_weights() -> None:
    module = ReCaptureModule(components=ComponentsConfig(pretrained=None, variant=None, tiny=True))
    module.load_parts()
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    keys = list(checkpoint["state_dict"])
    assert keys and all("lora_" in k for k in keys)
    n_lora = sum(p.numel() for n in ("spatial", "temporal") for p in adapter_parameters(module.unet, n))
    assert sum(checkpoint["state_dict"][k].numel() for k in keys) == n_lora
    module.on_load_checkpoint(checkpoint)  # complete: no error
    checkpoint["state_dict"].pop(keys[0])
    with pytest.raises(RecaptureError, match="LoRA"):
        module.on_load_checkpoint(checkpoint)


def test_checkpoint_of_another_lora_rank_is_one_clear_error() -> None:
    from recapture.adaptation import LoRAConfig

    tiny = ComponentsConfig(pretrained=None, variant=None, tiny=True)
    saved = ReCaptureModule(components=tiny, lora=LoRAConfig(rank=8))
    saved.load_parts()  # builds the UNet and its LoRAs
    checkpoint = {"state_dict": saved.state_dict()}
    saved.on_save_checkpoint(checkpoint)
    here = ReCaptureModule(components=tiny, lora=LoRAConfig(rank=4))
    here.load_parts()
    with pytest.raises(RecaptureError, match=r"do not fit this model .*saved \(8, \d+\), here \(4, \d+\).*rank") as err:
        here.on_load_checkpoint(checkpoint)
    assert "\n" not in str(err.value)


def test_sampling_conditions_the_unet_as_training_did(caplog) -> None:  # noqa: ANN001
    """model.objective is the one source of fps / motion bucket / noise augmentation."""
    import logging

    from recapture.adaptation import EDMConfig
    from recapture.sampling import RefineConfig, SamplingConfig
    from recapture.training.module import ReCaptureModule

    objective = EDMConfig(fps=12, motion_bucket_id=60, noise_aug_strength=0.05)
    module = ReCaptureModule(objective=objective)  # sampling and refine at their defaults
    for config in (module.sampling, module.refine):
        assert (config.fps, config.motion_bucket_id, config.noise_aug_strength) == (12, 60, 0.05)
    with caplog.at_level(logging.WARNING, logger="recapture.training.module"):
        module = ReCaptureModule(objective=objective, sampling=SamplingConfig(motion_bucket_id=200),
                                 refine=RefineConfig())
    assert module.sampling.motion_bucket_id == 200 and module.sampling.fps == 12  # explicit choice kept
    assert "model.sampling.motion_bucket_id=200 differs from model.objective.motion_bucket_id=60" in caplog.text


def test_checkpoint_restores_the_rng_of_the_next_step() -> None:
    """The RNG state at save time comes back on load (the noise of the resumed steps), not the state at load time."""
    module = ReCaptureModule(components=ComponentsConfig(pretrained=None, variant=None, tiny=True))
    module.load_parts()
    checkpoint = {"state_dict": module.state_dict()}
    torch.manual_seed(123)
    module.on_save_checkpoint(checkpoint)
    expected = torch.rand(4)
    torch.manual_seed(999)  # a fresh process seeds itself before restoring
    module.on_load_checkpoint(checkpoint)
    assert torch.equal(torch.rand(4), expected)


def test_training_loader_resumes_mid_epoch_and_accepts_a_distributed_sampler() -> None:
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    from recapture.training.datamodule import _StepDataset, _StepLoader

    class Items(_StepDataset):
        def __init__(self) -> None:
            self.length = 6

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            return {"spatial_index": torch.tensor([index])}

    def epoch(loader: _StepLoader) -> list[int]:
        return [int(b["spatial_index"]) for b in loader]

    loader = _StepLoader(Items())
    assert epoch(loader) == list(range(6)) and loader.state_dict() == {"position": 6, "length": 6}
    for position, first in ((4, [4, 5]), (6, list(range(6))), (0, list(range(6)))):  # 6: a finished epoch
        loader.load_state_dict({"position": position, "length": 6})
        assert epoch(loader) == first, position
        assert epoch(loader) == list(range(6))  # the epoch after starts at 0
    loader.load_state_dict({"position": 4, "length": 50})  # data.steps_per_epoch changed: from the start
    assert epoch(loader) == list(range(6))
    # several devices: Lightning re-creates the loader around a distributed sampler (must not fail)
    shard = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=False))
    assert isinstance(shard, _StepLoader) and epoch(shard) == [1, 3, 5] and shard.state_dict() == {}
    # the stock loader's one global-RNG draw per epoch is kept (the noise stream of earlier versions)
    torch.manual_seed(0)
    epoch(loader)
    after_ours = torch.rand(1)
    torch.manual_seed(0)
    list(torch.utils.data.DataLoader(loader.dataset, batch_size=1, collate_fn=lambda b: b))
    assert torch.equal(torch.rand(1), after_ours)


@pytest.mark.parametrize("device, pinned", [("cuda", True), ("cpu", False)])
def test_training_batches_are_page_locked_for_a_cuda_run(tmp_path, device, pinned) -> None:  # noqa: ANN001
    """Pinned batches make Lightning's non_blocking copy to the GPU asynchronous; on a CPU there is nothing to pin."""
    from types import SimpleNamespace

    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    from recapture.training.datamodule import ReCaptureDataModule

    data = ReCaptureDataModule(video="example", output_dir=str(tmp_path))
    data.tensors = SimpleNamespace()  # the loader only holds it until a batch is drawn
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    loader = data.train_dataloader()
    assert loader.pin_memory is pinned
    # kept when Lightning re-creates the loader around a distributed sampler (several GPUs)
    shard = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=0, shuffle=False))
    assert shard.pin_memory is pinned
