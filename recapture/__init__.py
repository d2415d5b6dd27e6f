"""recapture: give a user's own video a new camera trajectory (ReCapture, Zhang et al. 2024).

Pipeline stages, one subpackage each (plain torch, usable without Lightning):

* :mod:`recapture.io` - video read/write, resizing, grids and mask overlays
* :mod:`recapture.cameras` - conventions, intrinsics, trajectory presets and file formats
* :mod:`recapture.depth` - depth estimators behind one protocol
* :mod:`recapture.anchor` - point clouds, splatting, validity masks, anchor videos
* :mod:`recapture.adaptation` - SVD components, spatial/temporal LoRAs, temporal bypass, losses
* :mod:`recapture.sampling` - generation and SDEdit refinement
* :mod:`recapture.metrics` - image, VBench and camera metrics
* :mod:`recapture.data` - datasets (user video, Kubric-4D, synthetic scenes)
* :mod:`recapture.training` - LightningModule, LightningDataModule, callbacks

Conventions (used in every docstring): video ``(T, C, H, W)`` or ``(B, T, C, H, W)`` float in
[0, 1]; mask ``(..., 1, H, W)`` in {0, 1}; pose ``(..., 4, 4)`` camera-to-world with OpenCV axes
(x right, y down, z forward); intrinsics ``K`` ``(..., 3, 3)`` in pixels; depth is planar z in
scene units unless the name says otherwise (``distance``, ``disparity``).
"""

__version__ = "0.1.0"
