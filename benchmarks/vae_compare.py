"""Temporal VAEs side by side on held-out procedural clips: PSNR, chroma R^2, colour kept, and a picture.

    python benchmarks/vae_compare.py <vae dir> [<vae dir> ...] --png benchmarks/vae_compare.png

Each VAE folder is a diffusers ``AutoencoderKLTemporalDecoder`` (``save_pretrained`` layout, e.g.
``recapture/assets/recapture-tiny/vae`` or ``runs/prior-vae/export/vae``). The clips are the first
``--clips`` of split ``eval`` (seeds never used for training), 8 frames of 64x96, supersampled as the
VAE stage renders them. Reconstructions use the posterior mode. The picture shows frame 4 of the
first ``--shown`` clips: the clip, then each VAE's reconstruction, left to right.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKLTemporalDecoder  # noqa: E402
from PIL import Image  # noqa: E402

from recapture.adaptation.prior import reconstruct  # noqa: E402
from recapture.data.procedural.dataset import ProceduralVideoDataset  # noqa: E402
from recapture.metrics.image import psnr  # noqa: E402
from recapture.training.pretrain.quality import chroma_r2, colour_kept  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("vaes", nargs="+", type=Path)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--shown", type=int, default=3)
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    held = ProceduralVideoDataset(split="eval", num_clips=a.clips, supersample=2, with_geometry=False,
                                  with_target=False)
    clips = torch.stack([held[i]["video"] for i in range(a.clips)])
    print("| VAE | PSNR (dB) | chroma R^2 | colour kept |")
    print("| --- | ---: | ---: | ---: |")
    columns = [clips[: a.shown, 4]]
    for folder in a.vaes:
        vae = AutoencoderKLTemporalDecoder.from_pretrained(str(folder), local_files_only=True).eval()
        with torch.no_grad():
            rec = torch.cat([reconstruct(vae, c[None]) for c in clips])
        print(f"| `{folder}` | {float(psnr(rec, clips).mean()):.2f} | {chroma_r2(rec, clips):.3f} | "
              f"{colour_kept(rec, clips):.3f} |")
        columns.append(rec[: a.shown, 4])
    if a.png:
        grid = torch.cat([torch.cat(list(column), -2) for column in columns], -1)  # clips down, VAEs across
        image = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.NEAREST).save(a.png)
        print(f"wrote {a.png}")


if __name__ == "__main__":
    main()
