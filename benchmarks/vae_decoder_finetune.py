"""Can the shipped VAE's decoder alone get better? Fine-tune it with the encoder frozen and watch held-out PSNR.

    python benchmarks/vae_decoder_finetune.py --minutes 6 --lr 2e-4            # whole frames
    python benchmarks/vae_decoder_finetune.py --minutes 8 --lr 5e-4 --crop     # 32x48 crops (4x cheaper steps)

A frozen encoder keeps the latents, so the UNet trained on them stays valid: if the decoder alone
could gain, a decoder-only stage would raise the prior's VAE PSNR (issue goal: 28 dB) without
retraining the UNet. The script renders a pool of training clips (split ``train``), encodes them
once (posterior mode), trains the decoder (and ``post_quant_conv``) with an L1 or squared error in
bf16 autocast, and prints the held-out PSNR (16 clips of split ``eval``, as the model card) every
two minutes. Nothing is saved.
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> None:
    from diffusers import AutoencoderKLTemporalDecoder

    from recapture.adaptation.prior import reconstruct
    from recapture.hub import ASSETS
    from recapture.metrics.image import psnr
    from recapture.training.pretrain.data import PretrainDataModule

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", default=str(ASSETS / "recapture-tiny" / "vae"), help="a diffusers VAE folder")
    parser.add_argument("--minutes", type=float, default=6.0, help="training wall time")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--loss", choices=("l1", "mse"), default="l1")
    parser.add_argument("--crop", action="store_true", help="32x48 crops (latent 8x12) instead of whole frames")
    parser.add_argument("--pool", type=int, default=256, help="training clips rendered once")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = PretrainDataModule(supersample=2, max_objects=5)  # the prior's clips (model card)
    t0 = time.perf_counter()
    pool, held_out = data.reference_video(args.pool), data.eval_video(16)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(args.vae).eval()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def held_out_psnr() -> float:
        vae.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            decoded = torch.cat([reconstruct(vae, v[None]) for v in held_out])
        vae.train()
        return float(psnr(decoded, held_out).mean())

    with torch.no_grad():
        latents = torch.cat([vae.encode(pool[i : i + 8].flatten(0, 1) * 2 - 1).latent_dist.mode()
                             for i in range(0, len(pool), 8)])
    latents = latents.reshape(len(pool), pool.shape[1], *latents.shape[1:])
    print(f"rendered and encoded {len(pool)} clips in {time.perf_counter() - t0:.0f} s; "
          f"held-out PSNR before: {held_out_psnr():.2f} dB", flush=True)

    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    vae.train()
    (lh, lw), (h, w) = latents.shape[-2:], pool.shape[-2:]
    step, start = 0, time.perf_counter()
    report = start + 120
    while time.perf_counter() - start < args.minutes * 60:
        pick = torch.randint(0, len(pool), (2,))
        z, x = latents[pick], pool[pick]
        if args.crop:
            y0, x0 = int(torch.randint(0, lh - 8 + 1, ())), int(torch.randint(0, lw - 12 + 1, ()))
            z = z[..., y0 : y0 + 8, x0 : x0 + 12]
            x = x[..., factor * y0 : factor * (y0 + 8), factor * x0 : factor * (x0 + 12)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            decoded = vae.decode(z.flatten(0, 1), num_frames=x.shape[1]).sample.float()
        err = decoded - (x.flatten(0, 1) * 2 - 1)
        loss = err.abs().mean() if args.loss == "l1" else err.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if time.perf_counter() > report:
            elapsed = time.perf_counter() - start
            print(f"{elapsed / 60:.1f} min, step {step} ({elapsed / step:.2f} s/step): held-out PSNR "
                  f"{held_out_psnr():.2f} dB", flush=True)
            report = time.perf_counter() + 120
    print(f"after {step} steps ({h}x{w} clips{', crops' if args.crop else ''}, lr {args.lr}, {args.loss}): "
          f"held-out PSNR {held_out_psnr():.2f} dB")


if __name__ == "__main__":
    main()
