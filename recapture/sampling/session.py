"""Temporary model state for one sampling call: active LoRAs, eval mode, memory options.

Everything here is undone on exit (also on errors), so sampling in the middle of training (a
callback) leaves the UNet's adapters, ``requires_grad`` flags, train/eval mode, devices and
feed-forward chunking exactly as it found them.

Memory options and their trade-offs (full SVD: UNet 1.5 B parameters, VAE 98 M, CLIP-H 632 M):

* ``cpu_offload`` (CUDA only; ignored with a log line on CPU): accelerate hooks keep one model at a
  time on the GPU, in the pipeline's order image encoder -> UNet -> VAE. Saves the memory of the
  idle models (about 2.6 GB in fp16, 5.2 GB in fp32) for one host-to-device copy of each model per
  call: seconds of transfer over a sampling run of tens of seconds. The biggest saving when the
  weights, not the activations, are what does not fit.
* ``decode_chunk_size``: the temporal VAE decoder holds the activations of every frame it decodes
  at once; at 576x1024 decoding all 14 frames at once is the single largest activation peak of
  generation. Chunks of a few frames cut that peak proportionally; the decoder's temporal layers
  then mix frames within a chunk only (slight flicker possible at chunk borders). 8 is a safe
  default for 24 GB; lower it first if decoding runs out of memory.
* ``forward_chunking``: the UNet's feed-forward layers run one frame at a time
  (``enable_forward_chunking``), trading a little speed for less activation memory at high
  resolution.
* ``merge_lora`` (float32 weights only): the active LoRAs are folded into their base layers' weights
  for the call, so each adapted layer runs one matmul instead of three (the rank-r branch costs as
  much as the base layer where the layer is narrow: on the tiny model the UNet call is ~30% faster,
  benchmarks/README.md). The weights are restored from a copy on exit, bit for bit. The result
  equals the unmerged one to float32 rounding (~1e-6). Half-precision weights are never merged:
  rounding ``W + BA`` to fp16 would lose most of a small LoRA update.
* On the CPU, the temporal ``(k, 1, 1)`` convolutions (UNet and VAE decoder) run through oneDNN for
  the call: PyTorch otherwise sends them to its unoptimised ``slow_conv3d`` kernel when running
  single-threaded (2-4x slower; with several threads it already picks oneDNN, the same kernel).
  The GEGLU feed-forward layers run their rows in cache-sized blocks, and a cross-attention over
  SVD's single image token skips the attention call (its softmax is exactly 1), and the ResNet
  blocks write their SiLUs and sums into their own temporaries: all the same bits;
  :mod:`recapture.sampling.cpu_forwards`.
* On the CPU (Linux, glibc), large tensors come from the process heap for the call
  (``reuse_host_memory``, :mod:`recapture.host_memory`) instead of a fresh memory mapping each,
  which the kernel faults in and zeroes on first touch: the same bits, less system time, a higher
  peak RSS during the call.
* Attention slicing does not apply: neither ``UNetSpatioTemporalConditionModel`` nor the temporal
  VAE implements ``set_attention_slice`` (the pipeline's ``enable_attention_slicing`` is a no-op for
  SVD), and with PyTorch 2's fused SDPA attention never materialises the attention matrix anyway.
* Not done here: fp16/bf16 weights (choose the dtype when loading the components; halves weight
  and activation memory) and sequential CPU offload (layer by layer; fits in a few GB but is many
  times slower).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch

from recapture.adaptation import SVDComponents, set_active_adapters
from recapture.host_memory import reused_host_memory
from recapture.sampling.cpu_forwards import cpu_forwards
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)


def _tuner_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def use_adapters(unet: torch.nn.Module, names: Sequence[str] | None) -> Iterator[None]:
    """Activate exactly the LoRA adapters ``names`` inside the block, then restore the previous state.

    Args:
        unet: UNet with PEFT adapters (or none when ``names`` is None or empty).
        names: adapters to activate; an empty sequence disables every adapter (base model); None
            leaves the UNet as it is.
    """
    if names is None:
        yield
        return
    names = [names] if isinstance(names, str) else list(names)
    layers = _tuner_layers(unet)
    if not layers:
        if names:
            raise RecaptureError(
                f"the UNet has no LoRA adapters but adapters={names} were requested: add or load them "
                "first (add_recapture_adapters / load_lora), or pass adapters=None to sample the base model"
            )
        yield
        return
    saved = [(layer, list(layer.active_adapters), layer.disable_adapters) for layer in layers]
    grads = [(p, p.requires_grad) for p in unet.parameters()]
    try:
        set_active_adapters(unet, names)
        yield
    finally:
        for layer, active, disabled in saved:
            layer.set_adapter(active)
            layer.enable_adapters(not disabled)
        for p, flag in grads:
            p.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Put modules in eval mode (no LoRA dropout) inside the block; restore each submodule's flag after."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def feed_forward_chunking(unet: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Run the UNet's feed-forward layers one batch element (frame) at a time inside the block."""
    if not enabled:
        yield
        return
    blocks = [m for m in unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    saved = [(m, getattr(m, "_chunk_size", None), getattr(m, "_chunk_dim", 0)) for m in blocks]
    try:
        unet.enable_forward_chunking(chunk_size=1, dim=0)
        yield
    finally:
        for m, size, dim in saved:  # set back directly: some blocks ignore the dim argument
            m._chunk_size, m._chunk_dim = size, dim


@contextlib.contextmanager
def model_offload(components: SVDComponents, device: torch.device) -> Iterator[None]:
    """Keep one model at a time on ``device`` (accelerate hooks), image encoder -> UNet -> VAE.

    On exit the hooks are removed and every model goes back to the device it was on.

    Args:
        components: ``SVDComponents``.
        device: execution device (normally CUDA; any device works, which lets tests run it on CPU).
    """
    from accelerate import cpu_offload_with_hook
    from accelerate.hooks import remove_hook_from_module

    models = [components.image_encoder, components.unet, components.vae]
    homes = [next(m.parameters()).device for m in models]
    try:
        previous = None
        for model in models:
            _, previous = cpu_offload_with_hook(model, device, prev_module_hook=previous)
        yield
    finally:
        for model, home in zip(models, homes, strict=True):
            remove_hook_from_module(model, recurse=True)
            model.to(home)


@contextlib.contextmanager
def merged_lora(unet: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Fold the active LoRA adapters into their float32 base weights inside the block; restore them exactly.

    Only layers whose adapters are enabled and whose base weight is float32 are merged (the others
    run their LoRA branch as usual). The original weights are kept in host memory (no extra GPU
    memory; the full-size SVD's adapted layers hold 447 M parameters, 1.8 GB in float32). On exit
    every merged base weight (and bias) gets back its saved values, bit for bit, and PEFT's merge
    record is cleared, so training can go on from the same weights (sampling in a callback). Meant
    for inference: the merged weights carry no gradient to the LoRA parameters.

    Args:
        unet: a UNet with PEFT adapters (a model without any is left as it is).
        enabled: False makes this a no-op.

    Yields:
        the number of layers merged.
    """
    merges = []  # (layer, the active adapters it holds)
    if enabled:
        for layer in _tuner_layers(unet):
            weight = getattr(layer.get_base_layer(), "weight", None)
            names = [n for n in layer.active_adapters if n in getattr(layer, "lora_A", {})]
            float32 = getattr(weight, "dtype", None) == torch.float32
            if names and float32 and not layer.disable_adapters and not layer.merged:
                merges.append((layer, names))
    saved = []
    try:
        with torch.no_grad():
            for layer, names in merges:
                base = layer.get_base_layer()
                bias = getattr(base, "bias", None)
                bias = None if bias is None else bias.detach().to("cpu", copy=True)
                saved.append((layer, base.weight.detach().to("cpu", copy=True), bias))
                layer.merge(adapter_names=names)
        yield len(saved)
    finally:
        with torch.no_grad():
            for layer, weight, bias in saved:
                base = layer.get_base_layer()
                base.weight.copy_(weight)
                if bias is not None:
                    base.bias.copy_(bias)
                layer.merged_adapters.clear()


def execution_device(components: SVDComponents, cpu_offload: bool) -> torch.device:
    """Device the sampling runs on: the UNet's, or the current CUDA device when offloading from the CPU."""
    device = next(components.unet.parameters()).device
    if cpu_offload and device.type == "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def sampling_session(
    components: SVDComponents,
    adapters: Sequence[str] | None,
    cpu_offload: bool = False,
    chunk_feed_forward: bool = False,
    merge_lora: bool = True,
    reuse_host_memory: bool = True,
) -> Iterator[torch.device]:
    """Set up the models for one sampling call; yields the execution device (the UNet's).

    The VAE and image encoder are placed on that device for the call and returned afterwards
    (:mod:`recapture.adaptation.placement`), so sampling works wherever the previous stage left them.

    Args:
        components: ``SVDComponents``.
        adapters: LoRA adapters to activate (see ``use_adapters``).
        cpu_offload: model CPU offload on CUDA; logged and ignored without CUDA.
        chunk_feed_forward: feed-forward chunking in the UNet.
        merge_lora: fold the active float32 LoRAs into their base weights for the call (``merged_lora``).
        reuse_host_memory: on the CPU, large tensors come from the process heap for the call
            (:func:`recapture.host_memory.reused_host_memory`).
    """
    device = execution_device(components, cpu_offload)
    offload = cpu_offload and device.type == "cuda"
    if cpu_offload and not offload:
        log.info(
            "cpu_offload ignored: it only applies when sampling on a CUDA device (running on %s)", device
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(components.unet, components.vae, components.image_encoder))
        stack.enter_context(use_adapters(components.unet, adapters))
        stack.enter_context(feed_forward_chunking(components.unet, chunk_feed_forward))
        if offload:
            stack.enter_context(model_offload(components, device))
        else:  # the encoders join the UNet for this call (they may live on the CPU between stages)
            stack.enter_context(components.placed(device, ("vae", "image_encoder")))
        stack.enter_context(merged_lora(components.unet, merge_lora))
        if device.type == "cpu":
            stack.enter_context(cpu_forwards(components.unet, components.vae))
            stack.enter_context(reused_host_memory(reuse_host_memory))
        yield device
