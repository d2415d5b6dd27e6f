"""Video input/output: reading (decord with a validated PyAV fallback), writing, resizing, cuts, previews.

Conventions: frames ``(T, 3, H, W)`` float32 in [0, 1]; masks ``(T, 1, H, W)`` in {0, 1}.
"""

from recapture.io.cuts import cut_warning, detect_cuts
from recapture.io.resize import ResizePlan, apply_resize, plan_resize, resize_frames, target_size
from recapture.io.video import Video, probe_video, read_video
from recapture.io.visual import make_grid, overlay_mask, save_image
from recapture.io.writer import frames_digest, watchable_fps, write_video

__all__ = [
    "ResizePlan",
    "Video",
    "apply_resize",
    "cut_warning",
    "detect_cuts",
    "make_grid",
    "overlay_mask",
    "plan_resize",
    "probe_video",
    "read_video",
    "resize_frames",
    "save_image",
    "target_size",
    "frames_digest",
    "watchable_fps",
    "write_video",
]
