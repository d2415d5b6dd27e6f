"""The sampler's CPU forwards (``recapture.sampling.cpu_forwards``): the same bits as diffusers' own.

Each swapped forward must give exactly the stock module's output (``torch.equal``, not a tolerance:
it rearranges the work, not the arithmetic), fall back to the stock forward wherever it was not made
for, and leave the modules as they were on exit.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.resnet import SpatioTemporalResBlock
from torch.profiler import ProfilerActivity, profile

import recapture.sampling.cpu_forwards as cpu_forwards
import recapture.sampling.session as session
from recapture.adaptation import LoRAConfig, add_recapture_adapters, build_tiny_components
from recapture.sampling import SamplingConfig, blocked_feed_forwards, generate, merged_lora
from recapture.sampling.cpu_forwards import _plain_linear, lean_attention, lean_resnets


def _ops(fn) -> dict[str, int]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key: e.count for e in prof.key_averages()}


def _feed_forward(dim: int, seed: int = 0) -> FeedForward:
    torch.manual_seed(seed)
    return FeedForward(dim, activation_fn="geglu").eval()


@pytest.mark.parametrize("dim, rows", [(32, 5000), (320, 2100)])  # tiny model; full-size SVD's top level
def test_blocked_feed_forward_gives_the_stock_bits(dim, rows):
    ff = _feed_forward(dim)
    x = torch.randn(2, rows // 2, dim)
    with torch.no_grad():
        stock = ff(x)
        with blocked_feed_forwards(ff) as count:
            assert count == 1 and "forward" in vars(ff)
            blocked = ff(x)
            ops = _ops(lambda: ff(x))
    assert "forward" not in vars(ff)
    assert torch.equal(blocked, stock)
    blocks = rows // cpu_forwards._FF_BLOCK_ROWS  # equal blocks, the last one overlapping
    assert blocks > 1 and ops["aten::addmm"] == 2 * blocks, "the rows did not run in blocks"


def test_blocked_feed_forward_falls_back_where_it_does_not_apply():
    ff = _feed_forward(32)
    x = torch.randn(3000, 32)
    with blocked_feed_forwards(ff):
        # gradients on: the stock forward, so backward works
        y = ff(x.requires_grad_())
        y.sum().backward()
        assert x.grad is not None
        with torch.no_grad():
            # fewer than two blocks' rows: nothing to gain, the stock forward
            assert _ops(lambda: ff(x[: 2 * cpu_forwards._FF_BLOCK_ROWS - 1]))["aten::addmm"] == 2
            # bfloat16 (the same bits are checked for float32 only): the stock forward
            ff.to(torch.bfloat16)
            assert _ops(lambda: ff(x.detach().bfloat16()))["aten::addmm"] == 2
            ff.float()
            # dropout in training mode: the stock forward draws the same mask from the same seed
            ff.net[1].p = 0.5
            ff.train()
            torch.manual_seed(1)
            dropped = ff(x)
            ff.__dict__.pop("forward")
            torch.manual_seed(1)
            assert torch.equal(dropped, ff(x))


def test_plain_linear_sees_through_merged_or_inactive_lora_only():
    from peft import LoraConfig, inject_adapter_in_model

    plain = torch.nn.Linear(8, 8)
    assert _plain_linear(plain) is plain
    assert _plain_linear(torch.nn.Conv1d(8, 8, 1)) is None

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

    holder = inject_adapter_in_model(LoraConfig(r=2, target_modules=["proj"], init_lora_weights=False), Holder())
    layer = holder.proj
    base = layer.get_base_layer()
    assert _plain_linear(layer) is None, "an active unmerged LoRA branch is not a plain linear layer"
    layer.merge()
    assert _plain_linear(layer) is base
    layer.unmerge()
    layer.enable_adapters(False)
    assert _plain_linear(layer) is base
    layer.merge()  # merged and disabled: PEFT unmerges before running, so not the base weights
    assert _plain_linear(layer) is None


def _attention(cross: int | None) -> Attention:
    torch.manual_seed(0)
    return Attention(32, cross_attention_dim=cross, heads=2, dim_head=16, bias=False, out_bias=True).eval()


@pytest.mark.parametrize("cross_tokens", [None, 1, 2])
def test_lean_attention_gives_the_stock_bits(cross_tokens):
    attn = _attention(None if cross_tokens is None else 24)
    x = torch.randn(6, 300, 32)
    context = None if cross_tokens is None else torch.randn(6, cross_tokens, 24)
    with torch.no_grad():
        stock = attn(x, encoder_hidden_states=context)
        with lean_attention(attn) as count:
            assert count == 1 and type(attn.processor) is not AttnProcessor2_0
            lean = attn(x, encoder_hidden_states=context)
            ops = _ops(lambda: attn(x, encoder_hidden_states=context))
    assert type(attn.processor) is AttnProcessor2_0
    assert torch.equal(lean, stock)
    # one key: the softmax is exactly 1, so neither the query projection nor the attention runs
    sdpa = any("scaled_dot_product" in k for k in ops)
    assert sdpa == (cross_tokens != 1)


def test_lean_attention_leaves_other_attention_to_the_stock_processor():
    vae_like = Attention(32, heads=1, dim_head=32, norm_num_groups=8, residual_connection=True, bias=True).eval()
    x = torch.randn(2, 32, 8, 8)  # 4-D input and a group norm, as the VAE's mid-block attention
    with torch.no_grad():
        stock = vae_like(x)
        with lean_attention(vae_like):
            assert torch.equal(vae_like(x), stock)
    attn = _attention(24)
    x, context = torch.randn(2, 50, 32, requires_grad=True), torch.randn(2, 1, 24)
    with lean_attention(attn):
        attn(x, encoder_hidden_states=context).sum().backward()  # gradients: the stock processor
    # the stock path reaches x through the query projection (a gradient of float-rounding size); the
    # shortcut, whose output does not depend on x, would leave no gradient at all
    assert x.grad is not None and x.grad.abs().max() < 1e-6


def _resnet(unet_like: bool, seed: int = 0):
    """A SpatioTemporalResBlock as SVD's UNet has them (time embedding, 32 -> 64 channels: shortcut
    convolutions, mixing learned with images) or as its VAE decoder (no time embedding, learned mixing,
    switched), with its norms' affine parameters and mixing factor made non-trivial."""
    from diffusers.models.resnet import SpatioTemporalResBlock

    torch.manual_seed(seed)
    if unet_like:
        block = SpatioTemporalResBlock(32, 64, temb_channels=48, eps=1e-5, merge_strategy="learned_with_images")
    else:
        block = SpatioTemporalResBlock(32, 32, temb_channels=None, eps=1e-6, temporal_eps=1e-5,
                                       merge_strategy="learned", switch_spatial_to_temporal_mix=True)
    with torch.no_grad():
        for name, param in block.named_parameters():
            if "norm" in name or "mix_factor" in name:
                param.copy_(torch.randn_like(param))
    return block.eval()


@pytest.mark.parametrize("unet_like", [True, False])
def test_lean_resnets_give_the_stock_bits(unet_like):
    frames = 3
    block = _resnet(unet_like)
    x = torch.randn(2 * frames, 32, 12, 10)
    temb = torch.randn(2 * frames, 48) if unet_like else None
    indicator = torch.zeros(2, frames)
    kept = x.clone(), None if temb is None else temb.clone()
    with torch.no_grad():
        stock = block(x, temb, image_only_indicator=indicator)
        stock_ops = _ops(lambda: block(x, temb, image_only_indicator=indicator))
        with lean_resnets(block) as count:
            assert count == 3  # the spatio-temporal block, its spatial and its temporal ResNet
            lean = block(x, temb, image_only_indicator=indicator)
            lean_ops = _ops(lambda: block(x, temb, image_only_indicator=indicator))
    assert torch.equal(lean, stock)
    assert torch.equal(x, kept[0]) and (temb is None or torch.equal(temb, kept[1]))  # inputs untouched
    assert not any("forward" in vars(m) for m in block.modules())
    # the stock forward divides by output_scale_factor (1) and writes every SiLU into a new tensor
    assert stock_ops.get("aten::div", 0) >= 1 and "aten::div" not in lean_ops
    assert "aten::silu_" not in stock_ops and lean_ops["aten::silu_"] == 4  # two per ResNet


def test_lean_resnets_leave_other_blocks_and_gradients_to_the_stock_forward():
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(0)
    x, temb = torch.randn(2, 32, 8, 8), torch.randn(2, 16)
    others = [
        ResnetBlock2D(in_channels=32, temb_channels=16, up=True).eval(),
        ResnetBlock2D(in_channels=32, temb_channels=32, time_embedding_norm="scale_shift").eval(),
        ResnetBlock2D(in_channels=32, temb_channels=16, non_linearity="mish").eval(),
    ]
    for block in others:
        t = torch.randn(2, 32) if block.time_embedding_norm == "scale_shift" else temb
        with torch.no_grad():
            stock = block(x, t)
            with lean_resnets(block) as count:
                ops = _ops(lambda block=block, t=t: block(x, t))
                assert torch.equal(block(x, t), stock)
        assert "aten::silu_" not in ops and count == (type(block.nonlinearity) is torch.nn.SiLU)
    block = _resnet(True)
    x = torch.randn(6, 32, 6, 5, requires_grad=True)
    with lean_resnets(block):  # gradients: in-place steps would break the graph; the stock forward runs
        out = block(x, torch.randn(6, 48), image_only_indicator=torch.zeros(2, 3))
        out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_generate_gives_the_same_video_with_and_without_the_cpu_forwards(perturb, image, monkeypatch):
    components = build_tiny_components(seed=0)
    add_recapture_adapters(components.unet, LoRAConfig(rank=4))
    perturb(components, "spatial", 1, scale=0.05)
    perturb(components, "temporal", 2, scale=0.05)
    # small blocks, so this small clip's feed-forward layers (96 rows) run in two
    monkeypatch.setattr(cpu_forwards, "_FF_BLOCK_ROWS", 48)
    config = SamplingConfig(num_inference_steps=2, max_guidance_scale=2.0, seed=5)
    seen = []
    real = session.cpu_forwards

    @contextlib.contextmanager
    def spy(*modules):
        with real(*modules):
            modules = list(components.unet.modules())
            seen.append((
                sum(isinstance(m, FeedForward) and "forward" in vars(m) for m in modules),
                sum(isinstance(m, Attention) and type(m.processor) is not AttnProcessor2_0 for m in modules),
                sum(isinstance(m, SpatioTemporalResBlock) and "forward" in vars(m) for m in modules),
            ))
            yield

    monkeypatch.setattr(session, "cpu_forwards", spy)
    fast = generate(components, image, 3, config, progress=False)
    # diffusers' own feed-forward, attention and ResNets (the oneDNN convolutions stay: they are not
    # the same bits)
    for name in ("blocked_feed_forwards", "lean_attention", "lean_resnets"):
        monkeypatch.setattr(cpu_forwards, name, lambda *modules: contextlib.nullcontext(0))
    stock = generate(components, image, 3, config, progress=False)
    assert seen and min(seen[0]) > 0, seen
    assert torch.equal(fast.frames, stock.frames)
    assert not any("forward" in vars(m) for m in [*components.unet.modules(), *components.vae.modules()])
    with merged_lora(components.unet):  # what sampling runs: merged layers are plain linear layers
        proj = next(m for m in components.unet.modules() if isinstance(m, FeedForward)).net[0].proj
        assert _plain_linear(proj) is not None
