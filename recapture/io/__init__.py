"""Video input/output: reading (decord with a validated PyAV fallback), writing, resizing, previews.

Conventions: frames ``(T, 3, H, W)`` float32 in [0, 1]; masks ``(T, 1, H, W)`` in {0, 1}.
"""

from recapture.io.resize import resize_frames, target_size
from recapture.io.video import Video, probe_video, read_video
from recapture.io.visual import make_grid, overlay_mask, save_image
from recapture.io.writer import write_video

__all__ = [
    "Video",
    "make_grid",
    "overlay_mask",
    "probe_video",
    "read_video",
    "resize_frames",
    "save_image",
    "target_size",
    "write_video",
]
