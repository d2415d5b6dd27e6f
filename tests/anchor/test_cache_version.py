"""The anchor cache's version moves whenever the hard renderer's outputs do.

Anchors are cached under a key that includes ``CACHE_VERSION``; a change to the renderer that
forgets to bump it silently reuses stale anchors (it happened: the benchmark rerun after the
footprint change of 2026-12-07 hit anchors of the rule before). This test renders a fixed seeded
scene in hard mode (footprint 1, 3 and 5, with the mask post-processing and fusion on) and checks
the digest recorded for the current version. Hard mode only gathers colours and depths and compares
keys; with dyadic depths, focal length and camera moves every unprojection and transform is exact
(no rounding for a fused multiply-add or a BLAS kernel to do differently) and the rest are single
IEEE operations, so the digest does not depend on the machine (soft mode sums, so it is left out).

When the renderer's outputs change on purpose: bump ``CACHE_VERSION`` in
``recapture/anchor/pipeline.py`` and record the new digest below.
"""

from __future__ import annotations

import hashlib

import torch

from recapture.anchor import FusionSettings, MaskSettings, SplatSettings, render_anchor
from recapture.anchor.pipeline import CACHE_VERSION

DIGESTS = {
    "anchor-v3": "38c80bf4208722c47b9e33b3f170fd076a26319cb9e27de1a5d6d092f6cf8145",
}


def _digest() -> str:
    g = torch.Generator().manual_seed(1234)
    t, h, w = 3, 24, 40
    frames = torch.rand(t, 3, h, w, generator=g)
    depth = 2.0 + 0.25 * torch.randint(0, 12, (t, 1, h, w), generator=g).float()  # dyadic: exact arithmetic
    depth[:, :, 8:16, 12:24] = 1.0  # a near box: occlusions, cracks when magnified
    K = torch.tensor([[32.0, 0.0, 19.5], [0.0, 32.0, 11.5], [0.0, 0.0, 1.0]])
    c2w = torch.eye(4).repeat(t, 1, 1)
    c2w[:, 0, 3] = torch.tensor([0.0, 0.125, 0.25])
    c2w[:, 2, 3] = torch.tensor([0.0, 0.25, 0.375])
    sha = hashlib.sha256()
    for footprint, mask, fusion in (
        (1, MaskSettings(), FusionSettings()),
        (3, MaskSettings(), FusionSettings()),
        (5, MaskSettings(dilate=1, erode=1), FusionSettings()),
        (3, MaskSettings(), FusionSettings(neighbors=1)),
    ):
        out = render_anchor(frames, depth, K, c2w, splat=SplatSettings(footprint=footprint), mask=mask, fusion=fusion)
        for x in (out.frames, out.mask, out.depth):
            sha.update(x.contiguous().numpy().tobytes())
    return sha.hexdigest()


def test_cache_version_moves_with_the_renderer() -> None:
    digest = _digest()
    assert CACHE_VERSION in DIGESTS, f"no digest recorded for {CACHE_VERSION}: add {CACHE_VERSION!r}: {digest!r}"
    assert digest == DIGESTS[CACHE_VERSION], (
        f"the hard renderer's outputs changed ({digest}) but CACHE_VERSION is still {CACHE_VERSION}: bump it in "
        "recapture/anchor/pipeline.py (stale cached anchors would be reused) and record the new digest here"
    )
