"""CPU forwards for sampling: the same arithmetic as diffusers' modules, arranged for a CPU's kernels.

Each context manager swaps a module's ``forward`` for the block and puts the class's own back on
exit; every swapped forward falls back to the stock one for anything it was not made for (another
device or dtype, gradients on, training-mode dropout, unmerged LoRA branches). Measured effects:
``benchmarks/README.md``, "Sampling (CPU)".

* :func:`onednn_temporal_convolutions`: the temporal ``(k, 1, 1)`` ``Conv3d`` layers (UNet and VAE
  decoder) through oneDNN; PyTorch sends them to its unoptimised ``slow_conv3d`` kernel when
  running single-threaded (2-4x slower; with several threads it picks oneDNN itself).
* :func:`blocked_feed_forwards`: a GEGLU feed-forward (``FeedForward`` of every SVD transformer
  block) runs its rows in blocks whose 2x-wide intermediate fits the caches, instead of writing and
  re-reading tensors of tens of MB (a 14x256x384 CFG call's top-level projection is 43008x256
  floats) three times; the same bits.
* :func:`lean_attention`: diffusers' ``AttnProcessor2_0`` without its no-ops: a cross-attention over
  one key token (SVD's image embedding) gives every query the value itself, so the query projection
  and the attention call are skipped; the same bits.
* :func:`lean_resnets`: diffusers' ResNet blocks (``ResnetBlock2D``, ``TemporalResnetBlock``,
  ``SpatioTemporalResBlock``) with their SiLUs, time-embedding and residual additions and the
  spatio-temporal blend written into tensors the block made itself, instead of new ones, and without
  the division by an ``output_scale_factor`` of 1; the same bits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

__all__ = ["blocked_feed_forwards", "cpu_forwards", "lean_attention", "lean_resnets", "onednn_temporal_convolutions"]


@contextlib.contextmanager
def _swapped_forwards(swaps: list[tuple[torch.nn.Module, Callable]]) -> Iterator[int]:
    """Give each module its ``forward`` for the block (an instance attribute over the class's own);
    remove them on exit. Yields how many were swapped."""
    try:
        for module, forward in swaps:
            module.forward = forward
        yield len(swaps)
    finally:
        for module, _ in swaps:
            vars(module).pop("forward", None)


def _onednn_temporal_forward(conv: torch.nn.Conv3d):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
            return conv._conv_forward(x, conv.weight, conv.bias)
        return torch.ops.aten.mkldnn_convolution(
            x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups
        )

    return forward


# narrower temporal convolutions (the VAE's 3-channel output one) are faster on PyTorch's own kernel
_ONEDNN_MIN_CHANNELS = 8


@contextlib.contextmanager
def onednn_temporal_convolutions(*modules: torch.nn.Module) -> Iterator[int]:
    """Run the float32 ``(k, 1, 1)`` ``Conv3d`` layers of ``modules`` through oneDNN inside the block (CPU).

    PyTorch sends a convolution whose kernel is 1x1 in its last two dimensions to its unoptimised
    ``slow_conv3d`` when it runs single-threaded with a batch under 16; oneDNN computes the same
    convolution 2-4x faster (equal to float32 rounding; the very kernel PyTorch itself picks with
    several threads). Layers on another device or dtype, with gradients on, or with fewer than 8
    input channels keep the stock path. On exit the layers' own ``forward`` is back.

    Yields:
        the number of layers rerouted.
    """
    convs = []
    if torch.backends.mkldnn.is_available():
        for module in modules:
            for m in module.modules():
                if (
                    isinstance(m, torch.nn.Conv3d)
                    and tuple(m.kernel_size[1:]) == (1, 1)
                    and m.padding_mode == "zeros"
                    and not isinstance(m.padding, str)
                    and m.in_channels >= _ONEDNN_MIN_CHANNELS
                    and "forward" not in vars(m)
                ):
                    convs.append(m)
    with _swapped_forwards([(conv, _onednn_temporal_forward(conv)) for conv in convs]) as count:
        yield count


# rows per block at least: fastest for the tiny model (32 -> 256 -> 32) and full-size SVD's top level
# (320 -> 2560 -> 320) alike on a 2-core Xeon (2048 nearly so; benchmarks/README.md, "Sampling
# (CPU)"). The rows are cut into equal blocks of this to twice this (the last one overlapping its
# predecessor by the remainder): with fewer rows MKL may compute a matrix product differently
# (at 2 threads, K = 5120 and 513 rows it splits the sum over K), and a block's rows would no
# longer have the whole product's bits.
_FF_BLOCK_ROWS = 1024


def _plain_linear(layer: torch.nn.Module) -> torch.nn.Linear | None:
    """The ``nn.Linear`` that ``layer`` computes exactly: itself, or a PEFT layer's base layer where
    its forward runs only that (adapters merged, or none active); None for anything else."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if isinstance(layer, BaseTunerLayer):
        base = layer.get_base_layer()
        if type(base) is not torch.nn.Linear:
            return None
        if layer.disable_adapters:  # PEFT unmerges a merged layer before running it
            return None if layer.merged else base
        active = [n for n in layer.active_adapters if n in getattr(layer, "lora_A", {})]
        return base if layer.merged or not active else None
    return layer if type(layer) is torch.nn.Linear else None


def _geglu_parts(ff: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(GEGLU, output projection)`` of a diffusers ``FeedForward`` laid out as
    ``[GEGLU, Dropout, Linear(, Dropout)]``; None for any other layout."""
    from diffusers.models.activations import GEGLU

    net = getattr(ff, "net", None)
    if not isinstance(net, torch.nn.ModuleList) or len(net) not in (3, 4) or type(net[0]) is not GEGLU:
        return None
    if not all(isinstance(net[i], torch.nn.Dropout) for i in range(1, len(net)) if i != 2):
        return None
    return net[0], net[2]


def _linear_into(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` of a 2-D ``x`` written into ``out``: the ``addmm`` (or ``mm``) that
    F.linear runs, so per row the same dot products and the same bits."""
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


def _cpu_float32_inference(x: torch.Tensor) -> bool:
    """Whether ``x`` is a float32 CPU tensor in a call without gradients or autocast: what the
    feed-forward and ResNet forwards here are made for (anything else runs the stock forward)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def _blocked_feed_forward(ff: torch.nn.Module, geglu: torch.nn.Module, out_layer: torch.nn.Module):
    stock = type(ff).forward

    def forward(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        x = hidden_states
        first, last = _plain_linear(geglu.proj), _plain_linear(out_layer)
        dropout = ff.training and any(m.p > 0 for m in ff.net if isinstance(m, torch.nn.Dropout))
        if (
            args
            or kwargs
            or first is None
            or last is None
            or dropout
            or not _cpu_float32_inference(x)
            or not x.dtype == first.weight.dtype == last.weight.dtype
        ):
            return stock(ff, hidden_states, *args, **kwargs)
        w1, b1, w2, b2 = first.weight, first.bias, last.weight, last.bias
        inner = w1.shape[0] // 2
        rows = x.numel() // x.shape[-1]
        blocks = rows // _FF_BLOCK_ROWS
        if blocks < 2:
            return stock(ff, hidden_states)
        block = -(-rows // blocks)  # equal blocks of _FF_BLOCK_ROWS to twice that
        flat = x.reshape(rows, x.shape[-1])
        out = x.new_empty(rows, w2.shape[0])
        proj, act = x.new_empty(block, 2 * inner), x.new_empty(block, inner)
        for start in range(0, rows, block):
            start = min(start, rows - block)  # the last block overlaps: its rows get the same values again
            p = _linear_into(flat[start : start + block], w1, b1, proj)
            h = torch.mul(p[:, :inner], F.gelu(p[:, inner:]), out=act)  # GEGLU: hidden * gelu(gate)
            _linear_into(h, w2, b2, out[start : start + block])
        return out.view(*x.shape[:-1], w2.shape[0])

    return forward


@contextlib.contextmanager
def blocked_feed_forwards(*modules: torch.nn.Module) -> Iterator[int]:
    """Run the GEGLU feed-forward layers of ``modules`` in blocks of rows inside the block (CPU, no grad).

    diffusers' ``FeedForward`` projects every token to ``2 x inner`` features, splits them, multiplies
    one half by the GELU of the other and projects back: at the top level of a 14x256x384 CFG call,
    tensors of 44 and 22 MB, each written and read again from memory. Here each block of rows goes
    through all of it while its intermediate is in the caches (1024-2047 rows per block). Every output row is
    the same dot products in the same order: the same bits (``tests/sampling/test_cpu_forwards.py``;
    checked on 1 and 2 threads for widths 32 to 1280, float32). Calls in another dtype or on another
    device, with gradients or autocast on, in training with dropout, or through LoRA branches that are not merged
    (:func:`recapture.sampling.merged_lora`) run the stock forward. On exit the layers' own
    ``forward`` is back.

    Yields:
        the number of feed-forward layers rerouted.
    """
    swaps = []
    for module in modules:
        for m in module.modules():
            parts = _geglu_parts(m)
            if parts is not None and "forward" not in vars(m):
                swaps.append((m, _blocked_feed_forward(m, *parts)))
    with _swapped_forwards(swaps) as count:
        yield count


class _LeanAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` without its no-ops, for the attention SVD's UNet and VAE run:
    no mask, no spatial or group norm, no query/key norm, 3-D input, no gradients, CPU.

    * A cross-attention over a single key token (SVD's image embedding, one token per frame) gives
      every query the value itself: the softmax of one score is exactly 1 (``exp(0) / 1``), so the
      query projection and the attention call are skipped; the output projection runs on the same
      rows, so the result has the same bits.
    * The final division by ``rescale_output_factor`` is skipped when that is 1 (``x / 1`` is ``x``).

    Anything else goes to the stock processor.
    """

    def __init__(self, stock) -> None:
        self.stock = stock

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if (
            args
            or kwargs
            or attention_mask is not None
            or attn.spatial_norm is not None
            or attn.group_norm is not None
            or attn.norm_q is not None
            or attn.norm_k is not None
            or (encoder_hidden_states is not None and attn.norm_cross)
            or hidden_states.ndim != 3
            or hidden_states.device.type != "cpu"
            or torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")
        ):
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        batch, queries = hidden_states.shape[:2]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and context.shape[1] == 1 and context.shape[0] == batch:
            value = attn.to_v(context)
            out = value.expand(batch, queries, value.shape[-1]).contiguous().to(hidden_states.dtype)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
            heads = attn.heads
            head_dim = key.shape[-1] // heads
            query, key, value = (t.view(context.shape[0], -1, heads, head_dim).transpose(1, 2) for t in (query, key, value))
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
            out = out.transpose(1, 2).reshape(context.shape[0], -1, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        if attn.rescale_output_factor != 1:
            out = out / attn.rescale_output_factor
        return out


@contextlib.contextmanager
def lean_attention(*modules: torch.nn.Module) -> Iterator[int]:
    """Give the diffusers ``Attention`` layers of ``modules`` that run ``AttnProcessor2_0`` a processor
    without its no-ops inside the block (CPU, no gradients; the same bits; see ``_LeanAttnProcessor``).

    Yields:
        the number of attention layers given it.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    layers = [m for module in modules for m in module.modules()
              if isinstance(m, Attention) and type(m.processor) is AttnProcessor2_0]
    saved = [(m, m.processor) for m in layers]
    try:
        for m, stock in saved:
            m.processor = _LeanAttnProcessor(stock)
        yield len(saved)
    finally:
        for m, stock in saved:
            m.processor = stock


def _writable_into(x: torch.Tensor, other: torch.Tensor) -> bool:
    """Whether ``x op other`` can be written into ``x``: the result has ``x``'s shape and dtype, and
    ``other`` does not share its memory."""
    return (
        torch.broadcast_shapes(x.shape, other.shape) == x.shape
        and torch.result_type(x, other) == x.dtype
        and x.untyped_storage().data_ptr() != other.untyped_storage().data_ptr()
    )


def _add_into(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x + other``, written into ``x`` where :func:`_writable_into` allows, else a new tensor. Float
    addition is commutative, so ``x + other`` and ``other + x`` are the same bits. ``x`` must be the
    caller's own temporary (a layer's fresh output that nothing else holds)."""
    return x.add_(other) if _writable_into(x, other) else x + other


def _mul_into(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x * other``, written into ``x`` where :func:`_writable_into` allows; see :func:`_add_into`."""
    return x.mul_(other) if _writable_into(x, other) else x * other


def _lean_resnet_2d(block: torch.nn.Module):
    stock = type(block).forward

    def forward(input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs) -> torch.Tensor:
        if (
            args
            or kwargs
            or not _cpu_float32_inference(input_tensor)
            or block.upsample is not None
            or block.downsample is not None
            or block.time_embedding_norm != "default"
        ):
            return stock(block, input_tensor, temb, *args, **kwargs)
        # diffusers' ResnetBlock2D.forward for this layout, step by step
        hidden = block.conv1(F.silu(block.norm1(input_tensor), inplace=True))
        if block.time_emb_proj is not None:
            if not block.skip_time_act:
                temb = block.nonlinearity(temb)
            temb = block.time_emb_proj(temb)[:, :, None, None]
        if temb is not None:
            hidden = _add_into(hidden, temb)
        hidden = block.conv2(block.dropout(F.silu(block.norm2(hidden), inplace=True)))
        shortcut = input_tensor if block.conv_shortcut is None else block.conv_shortcut(input_tensor)
        out = _add_into(hidden, shortcut)
        return out if block.output_scale_factor == 1 else out / block.output_scale_factor

    return forward


def _lean_temporal_resnet(block: torch.nn.Module):
    stock = type(block).forward

    def forward(input_tensor: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        if not _cpu_float32_inference(input_tensor):
            return stock(block, input_tensor, temb)
        # diffusers' TemporalResnetBlock.forward, step by step
        hidden = block.conv1(F.silu(block.norm1(input_tensor), inplace=True))
        if block.time_emb_proj is not None:
            temb = block.time_emb_proj(block.nonlinearity(temb))[:, :, :, None, None].permute(0, 2, 1, 3, 4)
            hidden = _add_into(hidden, temb)
        hidden = block.conv2(block.dropout(F.silu(block.norm2(hidden), inplace=True)))
        shortcut = input_tensor if block.conv_shortcut is None else block.conv_shortcut(input_tensor)
        return _add_into(hidden, shortcut)

    return forward


def _lean_spatio_temporal_resnet(block: torch.nn.Module):
    stock = type(block).forward

    def forward(
        hidden_states: torch.Tensor,
        temb: torch.Tensor | None = None,
        image_only_indicator: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not _cpu_float32_inference(hidden_states) or image_only_indicator is None:
            return stock(block, hidden_states, temb, image_only_indicator)
        # diffusers' SpatioTemporalResBlock.forward with AlphaBlender.forward inlined
        num_frames = image_only_indicator.shape[-1]
        spatial = block.spatial_res_block(hidden_states, temb)
        batch_frames, channels, height, width = spatial.shape
        batch = batch_frames // num_frames
        spatial = spatial[None, :].reshape(batch, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
        if temb is not None:
            temb = temb.reshape(batch, num_frames, -1)
        temporal = block.temporal_res_block(spatial, temb)
        mixer = block.time_mixer
        alpha = mixer.get_alpha(image_only_indicator, spatial.ndim).to(spatial.dtype)
        if mixer.switch_spatial_to_temporal_mix:
            alpha = 1.0 - alpha
        if temporal.untyped_storage().data_ptr() == spatial.untyped_storage().data_ptr():
            weighted = (1.0 - alpha) * temporal  # not a tensor of its own: leave it as it is
        else:
            weighted = _mul_into(temporal, 1.0 - alpha)
        mixed = _add_into(alpha * spatial, weighted)  # alpha * spatial + (1 - alpha) * temporal
        return mixed.permute(0, 2, 1, 3, 4).reshape(batch_frames, channels, height, width)

    return forward


@contextlib.contextmanager
def lean_resnets(*modules: torch.nn.Module) -> Iterator[int]:
    """Run the ResNet blocks of ``modules`` (SVD's UNet and VAE) without new tensors for their
    elementwise steps inside the block (CPU, float32, no gradients or autocast).

    diffusers' blocks write every SiLU, the time-embedding and residual additions and the
    spatio-temporal blend ``alpha * spatial + (1 - alpha) * temporal`` into a new tensor, and divide
    the output by ``output_scale_factor`` (1 in SVD). Here each of these steps writes into the
    temporary it reads (a group norm's or convolution's own output), and the division by 1 is
    skipped: the same operations in the same order, so the same bits
    (``tests/sampling/test_cpu_forwards.py``). On the decoder's full-resolution activations (tens of
    MB each) that saves memory traffic. Blocks that up- or downsample, use another time-embedding
    norm or activation, or run another merge strategy keep the stock forward, as does every call on
    another device or dtype, with gradients or with autocast. On exit the blocks' own ``forward`` is
    back.

    Yields:
        the number of blocks given a lean forward.
    """
    from diffusers.models.resnet import (
        AlphaBlender,
        ResnetBlock2D,
        SpatioTemporalResBlock,
        TemporalResnetBlock,
    )

    swaps = []
    for module in modules:
        for m in module.modules():
            if "forward" in vars(m):
                continue
            if type(m) is ResnetBlock2D and type(m.nonlinearity) is torch.nn.SiLU:
                swaps.append((m, _lean_resnet_2d(m)))
            elif type(m) is TemporalResnetBlock and type(m.nonlinearity) is torch.nn.SiLU:
                swaps.append((m, _lean_temporal_resnet(m)))
            elif type(m) is SpatioTemporalResBlock and type(m.time_mixer) is AlphaBlender:
                swaps.append((m, _lean_spatio_temporal_resnet(m)))
    with _swapped_forwards(swaps) as count:
        yield count


@contextlib.contextmanager
def cpu_forwards(*modules: torch.nn.Module) -> Iterator[None]:
    """All of this module's CPU forwards for ``modules`` inside the block."""
    with (
        onednn_temporal_convolutions(*modules),
        blocked_feed_forwards(*modules),
        lean_attention(*modules),
        lean_resnets(*modules),
    ):
        yield
