"""Framework overhead of a ReCapture training step: the Lightning loop against the bare UNet step.

    python benchmarks/framework_overhead.py                 # tiny model, the demo's clip (8 frames, 128x64)
    python benchmarks/framework_overhead.py --steps 40 --size 192 --threads 1
    python benchmarks/framework_overhead.py --pretrained /tmp/svd_full --frames 2 --size 64 --steps 6 --rounds 2

Both paths train the same module on the same batches (the data module's real training tensors):

* **loop**: ``Trainer.fit`` of ``ReCaptureModule`` with the data module (the module's real
  ``training_step`` and ``backward``, Lightning's optimiser step, logging, data loading); per step the
  time from one ``on_train_batch_start`` to the next.
* **bare**: the minimum the step must compute, on the batches the data loader yields: ``edm_loss``
  of the UNet (under the temporal bypass for spatial steps) -> backward -> ``AdamW.step`` ->
  ``zero_grad``.

The two are timed in alternating rounds (``--rounds``) so that machine load affects both alike;
medians per step kind are reported with their ratio (goal: loop <= 1.10x bare).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402

from recapture.adaptation import ComponentsConfig, LoRAConfig, step_loss  # noqa: E402
from recapture.adaptation.encoding import AugmentConfig  # noqa: E402
from recapture.training.datamodule import ReCaptureDataModule  # noqa: E402
from recapture.training.module import ReCaptureModule  # noqa: E402


class Intervals(Callback):
    """Time between consecutive batch starts, by the kind of the step that ran."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {"temporal": [], "spatial": []}
        self._t: float | None = None
        self._kind = ""

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:  # noqa: ANN001
        now = time.perf_counter()
        if self._t is not None:
            self.times[self._kind].append(now - self._t)
        self._t, self._kind = now, pl_module.step_kind()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if self._t is not None:
            self.times[self._kind].append(time.perf_counter() - self._t)


def make(args: argparse.Namespace, tmp: str) -> tuple[ReCaptureModule, ReCaptureDataModule]:
    components = (ComponentsConfig(pretrained=args.pretrained, variant=None) if args.pretrained
                  else ComponentsConfig(pretrained=None, variant=None, tiny=True))
    module = ReCaptureModule(components=components,
                             lora=LoRAConfig(rank=8), gradient_checkpointing=False)
    data = ReCaptureDataModule(video="example", num_frames=args.frames, size=args.size,
                               augment=AugmentConfig(pool_size=4, condition_draws=2), spatial_batch_size=2,
                               steps_per_epoch=args.steps + 2, latent_cache_dir=f"{tmp}/latents")
    data.anchor.cache_dir = f"{tmp}/anchors"
    data.anchor.progress = False
    return module, data


def loop_round(module: ReCaptureModule, data: ReCaptureDataModule, steps: int, root: str) -> dict[str, list[float]]:
    timer = Intervals()
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                      default_root_dir=root, log_every_n_steps=10)
    trainer.fit(module, data)
    return {k: v[1:] for k, v in timer.times.items()}  # the first step of each kind warms up


def bare_round(module: ReCaptureModule, data: ReCaptureDataModule, steps: int) -> dict[str, list[float]]:
    unet = module.unet
    params = module.trainable_parameters()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    loader = iter(data.train_dataloader())
    times: dict[str, list[float]] = {"temporal": [], "spatial": []}
    o = module.objective
    for step in range(steps):
        batch = next(loader)
        kind = module.schedule.kind(step)
        t0 = time.perf_counter()
        module.adapter_switch.train(kind)
        with module.step_context(kind):  # the module's own step, without Lightning around it
            loss = step_loss(unet, batch, kind, o).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times[kind].append(time.perf_counter() - t0)
    return {k: v[1:] for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per round (both kinds alternate)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating loop/bare rounds")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="long side of the example clip (demo: 128)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pretrained", default=None,
                        help="an SVD folder (hub layout) instead of the tiny random model, e.g. one written by "
                             "recapture.adaptation.full_size.write_random_svd")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        module, data = make(args, tmp)
        data.prepare_data()
        loop = {"temporal": [], "spatial": []}
        bare = {"temporal": [], "spatial": []}
        for r in range(args.rounds):
            for kind, values in loop_round(module, data, args.steps, f"{tmp}/run{r}").items():
                loop[kind] += values
            for kind, values in bare_round(module, data, args.steps).items():
                bare[kind] += values
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    model = f"SVD from {args.pretrained}" if args.pretrained else "tiny model"
    print(f"`python benchmarks/framework_overhead.py {' '.join(os.sys.argv[1:])}` - {platform.machine()}, "
          f"{os.cpu_count()} CPUs (torch threads {torch.get_num_threads()}), torch {torch.__version__}, "
          f"load {load}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {model}, "
          f"{args.frames} frames of the example clip at size {args.size}, {args.rounds} x {args.steps} steps per path\n")
    print("| step kind | loop ms (median) | bare ms (median) | loop / bare |")
    print("| --- | ---: | ---: | ---: |")
    for kind in ("temporal", "spatial"):
        lm, bm = statistics.median(loop[kind]) * 1e3, statistics.median(bare[kind]) * 1e3
        print(f"| {kind} | {lm:.1f} | {bm:.1f} | {lm / bm:.2f} |")


if __name__ == "__main__":
    main()
