"""The overfit check: objective, conditioning and the stock diffusers sampler agree.

Fine-tune the tiny SVD on one tiny clip with :func:`edm_loss` until it memorises it, then sample
with the STOCK ``StableVideoDiffusionPipeline`` over the same parts (guidance 1, latent output):
the sample must be far closer to the clip than before training. A mismatch anywhere (v-scaling,
c_noise, conditioning latents scaled or not, fps - 1, CLIP preprocessing) breaks it.

Both LoRA adapters are active during training and the trained model is rebuilt from disk before
sampling (components via ``save_components``/``load_components``, adapters via
``save_lora``/``load_lora``), so the file formats are proven too. The base UNet is trained along
with the LoRAs: a randomly initialised base has no useful features for rank-limited attention
updates (LoRA-only training of the tiny model plateaus at ~15 dB), whereas on real SVD weights the
LoRAs alone suffice. ``test_lora_only_training_*`` checks the LoRA-only path separately.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.adaptation import (
    ComponentsConfig,
    EDMConfig,
    LoRAConfig,
    adapter_parameters,
    add_recapture_adapters,
    added_time_ids,
    edm_loss,
    encode_condition,
    encode_latents,
    load_components,
    load_lora,
    save_components,
    save_lora,
    set_active_adapters,
    set_trainable_adapter,
)

T, SIZE, FPS, MOTION, AUG = 4, 64, 7, 127, 0.02


def _clip() -> torch.Tensor:
    """A smooth random 4-frame 64x64 clip, quantised to uint8 levels (the pipeline gets a PIL image)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(T, 3, 4, 4, generator=g)
    clip = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    return (clip.clamp(0, 1) * 255).round() / 255


def _to_pil(frame: torch.Tensor) -> Image.Image:
    return Image.fromarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _sample(parts, image: Image.Image, seed: int = 0) -> torch.Tensor:  # noqa: ANN001
    pipe = parts.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        frames = pipe(
            image,
            height=SIZE,
            width=SIZE,
            num_frames=T,
            num_inference_steps=25,
            min_guidance_scale=1.0,
            max_guidance_scale=1.0,
            fps=FPS,
            motion_bucket_id=MOTION,
            noise_aug_strength=AUG,
            output_type="latent",
            generator=torch.Generator().manual_seed(seed),
        ).frames
    return frames[0]


def _latent_psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    peak = ref.max() - ref.min()
    return float(10 * torch.log10(peak**2 / ((x - ref) ** 2).mean()))


def _train(parts, clip: torch.Tensor, params, steps: int, lr: float, batch: int = 4) -> list[float]:  # noqa: ANN001
    z0 = encode_latents(parts.vae, clip)[None].expand(batch, -1, -1, -1, -1)
    ids = added_time_ids(FPS, MOTION, AUG, batch)
    config = EDMConfig(p_mean=1.0, p_std=2.0, noise_aug_strength=AUG, conditioning_dropout=0.0)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    parts.unet.train()
    losses = []
    for _ in range(steps):
        cond = encode_condition(parts.vae, parts.image_encoder, clip[:1], AUG, generator=g)
        out = edm_loss(
            parts.unet,
            z0,
            cond.cond_latents.expand(batch, -1, -1, -1),
            cond.image_embeds.expand(batch, -1, -1),
            ids,
            config=config,
            generator=g,
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    parts.unet.eval()
    return losses


@pytest.mark.slow
def test_overfit_then_stock_pipeline_reproduces_the_clip(tiny, tiny_dir, tmp_path) -> None:
    clip = _clip()
    image = _to_pil(clip[0])
    z0 = encode_latents(tiny.vae, clip)
    assert 0.5 < z0.std().item() < 2.0  # trap 1: latents at unit scale
    before = _latent_psnr(_sample(tiny, image), z0)

    add_recapture_adapters(tiny.unet, LoRAConfig(rank=8))
    for p in tiny.unet.parameters():  # base too: a random base has no features for LoRA to adapt
        p.requires_grad_(True)
    losses = _train(tiny, clip, [p for p in tiny.unet.parameters() if p.requires_grad], steps=250, lr=2e-3)
    assert np.mean(losses[-25:]) < 0.3 * np.mean(losses[:25])
    trained = _sample(tiny, image)

    # Rebuild from disk: adapters saved, removed, base saved, everything loaded back fresh.
    for name in ("spatial", "temporal"):
        save_lora(tiny.unet, name, tmp_path / "lora" / name)
    tiny.unet.unload_lora()
    save_components(tiny, tmp_path / "svd")
    fresh = load_components(ComponentsConfig(pretrained=str(tmp_path / "svd"), variant=None))
    for name in ("spatial", "temporal"):
        load_lora(fresh.unet, name, tmp_path / "lora" / name)
    reloaded = _sample(fresh, image)
    torch.testing.assert_close(reloaded, trained, rtol=1e-4, atol=1e-4)

    after = _latent_psnr(reloaded, z0)
    after_other_seed = _latent_psnr(_sample(fresh, image, seed=1), z0)
    set_active_adapters(fresh.unet, [])
    without_lora = _sample(fresh, image)
    print(
        f"latent PSNR before training {before:.1f} dB, after {after:.1f} dB (seed 1: {after_other_seed:.1f} dB)"
    )
    assert before < 17.0
    assert after > 24.0 and after_other_seed > 24.0
    assert after > before + 8.0
    assert (without_lora - reloaded).abs().max() > 1e-3  # the loaded LoRAs take part in sampling


def test_lora_only_training_lowers_the_loss_and_keeps_the_base(tiny) -> None:
    clip = _clip()
    add_recapture_adapters(tiny.unet, LoRAConfig(rank=8))
    set_trainable_adapter(tiny.unet, "temporal")
    base = {n: p.detach().clone() for n, p in tiny.unet.named_parameters() if "lora_" not in n}
    spatial = [p.detach().clone() for p in adapter_parameters(tiny.unet, "spatial")]
    z0 = encode_latents(tiny.vae, clip)[None].expand(4, -1, -1, -1, -1)
    cond = encode_condition(
        tiny.vae, tiny.image_encoder, clip[:1], AUG, generator=torch.Generator().manual_seed(0)
    )
    fixed = dict(
        latents=z0,
        cond_latents=cond.cond_latents.expand(4, -1, -1, -1),
        image_embeds=cond.image_embeds.expand(4, -1, -1),
        time_ids=added_time_ids(FPS, MOTION, AUG, 4),
        sigma=torch.tensor([0.3, 1.0, 3.0, 10.0]),
        drop_conditioning=torch.zeros(4, dtype=torch.bool),
    )

    def eval_loss() -> float:
        with torch.no_grad():
            return edm_loss(tiny.unet, **fixed, generator=torch.Generator().manual_seed(9)).loss.item()

    start = eval_loss()
    _train(tiny, clip, adapter_parameters(tiny.unet, "temporal"), steps=30, lr=2e-2)
    assert eval_loss() < 0.92 * start  # ~0.82 x: LoRA-only capacity on a random base is small
    assert all(torch.equal(p, base[n]) for n, p in tiny.unet.named_parameters() if "lora_" not in n)
    assert all(
        torch.equal(a, b) for a, b in zip(adapter_parameters(tiny.unet, "spatial"), spatial, strict=True)
    )
