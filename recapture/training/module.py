"""The ReCapture LightningModule: masked temporal-LoRA steps alternating with spatial-LoRA steps.

* **temporal step** (paper eq. 5): the anchor clip, EDM loss masked by the anchor's validity mask;
  the spatial LoRA is active (features pass through it) but frozen; only the temporal LoRA learns.
* **spatial step** (paper eq. 6): augmented single source frames with the temporal layers bypassed
  (:func:`recapture.adaptation.temporal_bypass`), each conditioned on another source frame; only the
  spatial LoRA learns.

Which kind a step is follows :class:`StepSchedule` and the global step, so a resumed run continues
the alternation exactly. Only the UNet is a registered submodule: the VAE and CLIP encoder stay on
the CPU (the data module encodes everything once), and checkpoints hold only the LoRA weights.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from recapture.adaptation import (
    AdapterSwitch,
    BypassTargets,
    ComponentsConfig,
    EDMConfig,
    LoRAConfig,
    SVDComponents,
    adapter_parameters,
    add_recapture_adapters,
    bypass_targets,
    load_components,
)
from recapture.adaptation.encoding import TrainingEncoder
from recapture.adaptation.objective import MicroConditioning
from recapture.adaptation.step import Kind, step_context, step_loss
from recapture.sampling import RefineConfig, SamplingConfig
from recapture.training.results import RunResult
from recapture.training.step_logging import ProgressBarLosses, log_learning_rate
from recapture.utils import RecaptureError, hash_inputs

log = logging.getLogger(__name__)

RNG_KEY = "recapture_rng_states"  # in checkpoints: the RNG states of the next step (exact resumption)


@dataclass
class StepSchedule:
    """How temporal and spatial steps alternate.

    Args:
        temporal: temporal (anchor clip, masked) steps per cycle.
        spatial: spatial (source frames, temporal bypass) steps per cycle.
        order: ``temporal_first`` runs the cycle's temporal steps then its spatial steps;
            ``spatial_first`` the reverse.
    """

    temporal: int = 1
    spatial: int = 1
    order: Literal["temporal_first", "spatial_first"] = "temporal_first"

    def kind(self, step: int) -> Kind:
        """Kind of global step ``step``."""
        if self.temporal < 0 or self.spatial < 0 or self.temporal + self.spatial == 0:
            raise RecaptureError(
                f"model.schedule needs non-negative step counts with a positive sum, got "
                f"temporal={self.temporal}, spatial={self.spatial}"
            )
        first, second = ("temporal", "spatial") if self.order == "temporal_first" else ("spatial", "temporal")
        n_first = self.temporal if first == "temporal" else self.spatial
        return first if step % (self.temporal + self.spatial) < n_first else second  # type: ignore[return-value]


def _check_compile_backend(name: str) -> str:
    """``name`` if ``torch.compile`` knows it, else a :class:`RecaptureError` naming the known ones."""
    import difflib

    import torch._dynamo

    if name not in set(torch._dynamo.list_backends(exclude_tags=())) | {"inductor"}:
        usual = sorted(set(torch._dynamo.list_backends()) | {"inductor", "aot_eager"})
        close = difflib.get_close_matches(name, usual, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecaptureError(
            f"model.compile_backend={name!r} is not a torch.compile backend{hint}; the usual ones: {', '.join(usual)}"
        )
    return name


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    """AdamW at the paper's learning rate (5e-4), no weight decay."""
    return torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)


class ReCaptureModule(LightningModule):
    """Masked video fine-tuning of Stable Video Diffusion with a spatial and a temporal LoRA.

    Args:
        components: which SVD weights to load (hub id or local directory), or the tiny random set.
        lora: rank (paper: 16), alpha and targets of the two LoRAs.
        objective: EDM noise distribution, conditioning (fps, motion bucket, noise augmentation),
            conditioning dropout and the latent mask threshold.
        schedule: alternation of temporal and spatial steps.
        gradient_checkpointing: recompute UNet activations in the backward pass (much less memory,
            ~30% slower).
        bypass_skip_compute: under the temporal bypass, skip the temporal blocks' compute (same output,
            faster spatial steps).
        compile_unet: ``torch.compile`` the UNet, in place (``nn.Module.compile``: the module, its
            parameters and its state-dict keys stay as they are, so LoRA export and checkpoints are
            unchanged). The first temporal and the first spatial step compile one graph each (no graph
            breaks, with or without gradient checkpointing and the bypass); generation and refinement
            compile their own. Meant for GPUs: on a CPU compiling takes minutes
            (benchmarks/README.md, "Ready for the GPU goals").
        compile_backend: the ``torch.compile`` backend (``inductor``; ``aot_eager`` traces the same
            graphs without generating code, which checks a setup quickly).
        optimizer: optimizer factory (default AdamW, lr 5e-4); set ``class_path``/``init_args`` in YAML.
        lr_scheduler: optional learning-rate scheduler factory.
        sampling: generation settings used after training (both LoRAs).
        refine: SDEdit refinement settings (spatial LoRA only).
    """

    def __init__(
        self,
        components: ComponentsConfig = ComponentsConfig(),
        lora: LoRAConfig = LoRAConfig(),
        objective: EDMConfig = EDMConfig(),
        schedule: StepSchedule = StepSchedule(),
        gradient_checkpointing: bool = True,
        bypass_skip_compute: bool = True,
        compile_unet: bool = False,
        compile_backend: str = "inductor",
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        sampling: SamplingConfig = SamplingConfig(),
        refine: RefineConfig = RefineConfig(),
    ) -> None:
        super().__init__()
        self.components_config = replace(components)
        self.lora = replace(lora)
        self.lora.validate()  # before the anchor is rendered: a bad value costs no work
        self.objective = replace(objective)
        self.objective.validate()
        self.schedule = replace(schedule)
        self.schedule.kind(0)  # validate early
        self.gradient_checkpointing = gradient_checkpointing
        self.bypass_skip_compute = bypass_skip_compute
        self.compile_unet = compile_unet
        # checked whenever it is not the default, so a typo shows even while compile_unet is off
        self.compile_backend = compile_backend if compile_backend == "inductor" else _check_compile_backend(compile_backend)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.sampling = replace(sampling)
        self.refine = replace(refine)
        _share_micro_conditioning(self.objective, self.sampling, "model.sampling")
        _share_micro_conditioning(self.objective, self.refine, "model.refine")
        self._components: SVDComponents | None = None
        self.adapter_switch: AdapterSwitch | None = None  # set with the parts by load_parts()
        self.progress_losses = ProgressBarLosses()
        self.bypass_targets: BypassTargets | None = None
        self.result = RunResult()  # what the output callbacks produce (reset at every fit start)
        # checkpoints hold only LoRA weights: the frozen UNet is reloaded from `components`
        self.strict_loading = False

    # ------------------------------------------------------------------ components
    @property
    def components(self) -> SVDComponents:
        """The SVD parts with both LoRAs, once :meth:`load_parts` has loaded them (reading has no side effects).

        Lightning loads them in :meth:`configure_model`, before any step or callback runs.
        """
        if self._components is None:
            raise RuntimeError("ReCaptureModule.components: the parts are not loaded yet; call load_parts() first "
                               "(Lightning does in configure_model)")
        return self._components

    def load_parts(self, device: torch.device | str | None = None, precision: str | None = None) -> SVDComponents:
        """Load the SVD parts once, for ``device`` (default: the attached trainer's), and add the LoRAs.

        The base weights are frozen; the LoRAs are float32 whatever the base dtype; gradient
        checkpointing is enabled when configured. The parts stay on the CPU: Lightning moves the UNet
        (the only registered submodule) and each stage places the VAE and image encoder itself.
        """
        if self._components is not None:
            return self._components
        trainer = getattr(self, "_trainer", None)
        if device is None and trainer is not None:
            device, precision = trainer.strategy.root_device, str(trainer.precision)
        parts = load_components(self.components_config, device=device, precision=precision)
        unet = parts.unet
        for module in (unet, parts.vae, parts.image_encoder):
            module.requires_grad_(False)
        add_recapture_adapters(unet, self.lora)
        if self.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if self.compile_unet:
            unet.compile(backend=self.compile_backend)  # compiled at its first call, on its device
        self.unet = unet  # the only registered submodule
        # found once: walking the UNet's modules at every step costs milliseconds
        self.adapter_switch = AdapterSwitch(unet)
        self.bypass_targets = bypass_targets(unet)
        self._components = parts
        return parts

    def components_id(self) -> str:
        """Identifies the frozen weights and their dtypes (latent caches are keyed by it)."""
        c = self.components_config
        parts = self.load_parts()
        dtypes = f"vae={parts.vae.dtype},clip={parts.image_encoder.dtype}"
        if c.tiny:
            return f"tiny-{c.tiny_seed}:{dtypes}"
        return f"{c.pretrained}:{c.variant}:{dtypes}:{_weights_fingerprint(c.pretrained)}"

    def training_encoder(self) -> TrainingEncoder:
        """The model's side of encoding the training tensors (what the data module needs, declared)."""
        return TrainingEncoder(self.load_parts(), self.components_id(), self.objective)

    def configure_model(self) -> None:
        self.load_parts()  # builds the parts before the strategy moves the UNet

    def on_fit_start(self) -> None:
        self.result = RunResult()  # one fit, one result: nothing carries over from a previous fit

    # ------------------------------------------------------------------ training
    def step_kind(self) -> Kind:
        """Kind of the current global step (``temporal`` or ``spatial``)."""
        return self.schedule.kind(self.global_step)

    def step_context(self, kind: Kind) -> contextlib.AbstractContextManager[Any]:
        """What a step of ``kind`` runs under: the temporal bypass for spatial steps.

        Entered for the forward pass (``training_step``) and again for the backward pass
        (:meth:`backward`), so checkpointed blocks recomputed during backward are bypassed too.
        """
        return step_context(self.unet, kind, skip_compute=self.bypass_skip_compute, targets=self.bypass_targets)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        kind = self.step_kind()
        self.adapter_switch.train(kind)
        with self.step_context(kind):
            out = step_loss(self.unet, batch, kind, self.objective)
        b = batch[f"{kind}_latents"].shape[0]
        # no host-device sync per step (recapture.training.step_logging): the losses stay on the
        # device for the logger, the progress bar gets a host copy every log_every_n_steps steps
        self.log(f"train/loss_{kind}", out.loss, batch_size=b)
        self.log("train/loss", out.loss, batch_size=b)
        self.progress_losses.show(self, f"loss_{kind}", out.loss, b)
        log_learning_rate(self, b)
        return out.loss

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward, under the same step context as the forward (see :meth:`step_context`)."""
        with self.step_context(self.step_kind()):
            super().backward(loss, *args, **kwargs)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self.load_parts()
        return adapter_parameters(self.unet, "spatial") + adapter_parameters(self.unet, "temporal")

    def configure_optimizers(self) -> Any:
        params = self.trainable_parameters()
        for p in params:
            p.requires_grad_(True)
        optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints: LoRA only
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if "lora_" in k}
        checkpoint[RNG_KEY] = self._rng_states()

    def _rng_states(self) -> dict[str, Any]:
        """The random states the next training steps draw their noise from (global torch RNG, this device's CUDA one)."""
        cuda = self.device.type == "cuda"
        return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
                "world_size": self.trainer.world_size if self._trainer is not None else 1}

    def _restore_rng(self, states: dict[str, Any] | None) -> None:
        """Set the RNG states a checkpoint saved, so a resumed run draws the noise an uninterrupted run draws
        (the data loader makes the rest of the draws match; see ``recapture.training.datamodule._StepLoader``)."""
        if states is None:
            return
        trainer = self._trainer
        world = trainer.world_size if trainer is not None else 1
        if states.get("world_size", 1) != 1 or world != 1:
            log.info("resumed on %d device(s) from a checkpoint of %s: the noise continues from fresh RNG states "
                     "(exact resumption is for single-device runs)", world, states.get("world_size"))
            return
        torch.set_rng_state(states["torch"])
        device = trainer.strategy.root_device if trainer is not None else self.device
        if states.get("cuda") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"], device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = [k for k in self.unet.state_dict() if "lora_" in k and f"unet.{k}" not in checkpoint["state_dict"]]
        if missing:
            raise RecaptureError(
                f"the checkpoint has no weights for {len(missing)} LoRA tensors (e.g. {missing[0]}): it was "
                "saved with other LoRA settings (rank/targets); use the same model.lora as the run that wrote it"
            )
        own = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in checkpoint["state_dict"].items()
                 if k in own and v.shape != own[k].shape]
        if wrong:
            key, saved, here = wrong[0]
            raise RecaptureError(
                f"the checkpoint's LoRA weights do not fit this model ({len(wrong)} tensors, e.g. {key}: saved "
                f"{saved}, here {here}): it was saved with another model.lora.rank or model.components; resume "
                "with the config of the run that wrote it (its config.yaml)"
            )
        self._restore_rng(checkpoint.get(RNG_KEY))


MICRO_CONDITIONING = tuple(f.name for f in fields(MicroConditioning))  # fps, motion_bucket_id, noise_aug_strength


def _share_micro_conditioning(objective: EDMConfig, config: MicroConditioning, section: str) -> None:
    """Sampling conditions the UNet as training did: ``model.objective`` is the one source.

    Both configs hold the same :class:`~recapture.adaptation.objective.MicroConditioning` fields.
    A sampling field left at its default takes the objective's value; one set explicitly to a
    different value is kept (sampling a different motion bucket is a legitimate experiment) with a
    warning that the LoRAs were trained with the other. (A flat config cannot tell a value set to
    the default from one left at it: both take the objective's value.)
    """
    defaults, trained_with = MicroConditioning(), objective.micro
    for name in MICRO_CONDITIONING:
        trained, sampled = getattr(trained_with, name), getattr(config, name)
        if sampled == trained:
            continue
        if sampled == getattr(defaults, name):
            setattr(config, name, trained)
        else:
            log.warning("%s.%s=%s differs from model.objective.%s=%s the LoRAs are trained with", section, name,
                        sampled, name, trained)


def _weights_fingerprint(pretrained: str | None) -> str:
    """Names, sizes and modification times of a local weights directory's files ('' for a hub id).

    Replacing the weights in a directory changes the fingerprint, so latents encoded with the old
    weights are not reused.
    """
    from recapture.hub import shipped_model

    shipped = shipped_model(pretrained) if pretrained else None
    if shipped is not None:  # a shipped prior: its checksums (verified) identify its weights
        return hash_inputs(shipped / "checksums.json")
    path = Path(pretrained or "").expanduser()
    if not pretrained or not path.is_dir():
        return ""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".bin", ".json"})
    return hash_inputs([(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])
