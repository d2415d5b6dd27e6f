"""Optical flow for VBench's dynamic degree: torchvision's RAFT-large behind our flow-callable contract.

Use with ``recapture evaluate --metrics dynamic_degree --weights.flow recapture.metrics.flow:raft_large``
(or ``MetricWeights(flow="recapture.metrics.flow:raft_large")``). VBench uses RAFT "raft-things";
torchvision's ``raft_large`` with its ``C_T_V1`` weights is the same architecture trained on the same
data (FlyingChairs + FlyingThings) and is close. It needs torchvision, which is in the optional
``vbench`` extra (``pip install 'recapture[vbench]'``, GPU machines) and not in the CPU test
environment. Weights are a local file: set ``RECAPTURE_RAFT_WEIGHTS`` to torchvision's
``raft_large_C_T_V1-22a6c225.pth`` (https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from recapture.utils import RecaptureError

WEIGHTS_ENV = "RECAPTURE_RAFT_WEIGHTS"
WEIGHTS_URL = "https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth"


def raft_large(iters: int = 20, device: str | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """RAFT-large as a flow callable ``(img1, img2) -> flow (B, 2, H, W)`` on images in [0, 1].

    Args:
        iters: refinement iterations (VBench runs RAFT with 20).
        device: where RAFT runs (default: CUDA when available).

    Returns:
        the flow callable (inputs padded to multiples of 8 like RAFT's ``InputPadder``, output
        cropped back).
    """
    weights = os.environ.get(WEIGHTS_ENV)
    if not weights or not Path(weights).is_file():
        raise RecaptureError(
            f"RAFT weights not found: set {WEIGHTS_ENV} to torchvision's raft_large_C_T_V1 state dict "
            f"(download {WEIGHTS_URL}); got {weights!r}"
        )
    try:
        from torchvision.models.optical_flow import raft_large as tv_raft_large
    except Exception as err:  # torchvision is missing or broken (it is unusable with the CPU torch build)
        raise RecaptureError(
            f"RAFT needs torchvision ({err}); install the optional extra on a GPU machine: "
            "pip install 'recapture[vbench]'"
        ) from err
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = tv_raft_large(weights=None, progress=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval().to(dev)

    @torch.no_grad()
    def flow(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        h, w = img1.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        a = F.pad(img1.to(dev) * 2 - 1, pad, mode="replicate")
        b = F.pad(img2.to(dev) * 2 - 1, pad, mode="replicate")
        out = model(a, b, num_flow_updates=iters)[-1]
        return out[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w]

    return flow
