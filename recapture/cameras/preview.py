"""PNG preview of a trajectory: camera frustums in 3D over the source camera, plus a top view.

Drawn in the source camera's OpenCV frame (x right, y down, z forward) with y pointing down on the
page, equal axis scaling, frustums coloured by frame index, the source camera in black (with the
source frame on its image plane when given) and the orbit pivot when there is one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recapture.cameras.conventions import intrinsics_from_fov
from recapture.cameras.trajectory import Trajectory
from recapture.utils import RecaptureError, atomic_path

__all__ = ["plot_trajectory"]

_CMAP = "viridis"


def _frustum(c2w: np.ndarray, K: np.ndarray, height: int, width: int, depth: float) -> np.ndarray:
    """Camera centre and the 4 image-corner points at ``depth``: ``(5, 3)`` world coordinates."""
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], dtype=np.float64)
    rays = corners @ np.linalg.inv(K).T
    pts = rays * depth  # planar depth
    world = pts @ c2w[:3, :3].T + c2w[:3, 3]
    return np.vstack([c2w[:3, 3], world])


def _to_plot(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV (x, y, z) -> matplotlib axes (x, z, y); the vertical plot axis is inverted (y down)."""
    return p[..., 0], p[..., 2], p[..., 1]


def _draw_frustum(ax, f: np.ndarray, color, lw: float, alpha: float = 1.0, edges: bool = True) -> None:
    c, corners = f[0], f[1:]
    if edges:
        for k in range(4):
            ax.plot(*_to_plot(np.stack([c, corners[k]])), color=color, lw=lw, alpha=alpha)
    ring = np.vstack([corners, corners[:1]])
    ax.plot(*_to_plot(ring), color=color, lw=lw, alpha=alpha)
    # a small triangle on the top edge (-y side of the image) shows which way is up (and the roll)
    top_mid = (corners[0] + corners[1]) / 2
    up = top_mid - (corners[2] + corners[3]) / 2
    tri = np.stack([corners[0] * 0.7 + corners[1] * 0.3, top_mid + 0.25 * up, corners[0] * 0.3 + corners[1] * 0.7])
    ax.plot(*_to_plot(np.vstack([tri, tri[:1]])), color=color, lw=lw, alpha=alpha)


def _image_on_plane(ax, f: np.ndarray, image: np.ndarray) -> None:
    """Texture the source frame onto its frustum's image plane (downsampled for speed)."""
    h, w = image.shape[:2]
    step = max(1, int(np.ceil(max(h, w) / 64)))
    img = image[::step, ::step]
    hh, ww = img.shape[:2]
    tl, tr, br, bl = f[1], f[2], f[3], f[4]
    a = np.linspace(0, 1, ww + 1)[None, :, None]
    b = np.linspace(0, 1, hh + 1)[:, None, None]
    grid = (1 - b) * ((1 - a) * tl + a * tr) + b * ((1 - a) * bl + a * br)
    x, y, z = _to_plot(grid)
    rgba = np.concatenate([img, np.full((*img.shape[:2], 1), 0.85)], axis=-1)
    ax.plot_surface(x, y, z, rstride=1, cstride=1, facecolors=rgba, shade=False, linewidth=0, antialiased=False,
                    zorder=0)


def _as_hwc(image: Tensor) -> np.ndarray:
    img = torch.as_tensor(image).detach().float().cpu()
    if img.ndim == 4:
        img = img[0]
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise RecaptureError(f"image must be (C, H, W) or (T, C, H, W) with C in (1, 3), got {tuple(img.shape)}.")
    img = img.expand(3, *img.shape[1:]) if img.shape[0] == 1 else img
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def _summary(trajectory: Trajectory) -> str:
    last = trajectory.c2w[-1].double()
    pos = last[:3, 3].tolist()
    fwd = last[:3, 2]
    yaw = float(torch.rad2deg(torch.atan2(fwd[0], fwd[2])))
    pitch = float(torch.rad2deg(torch.asin(-fwd[1].clamp(-1, 1))))
    roll = float(torch.rad2deg(torch.asin(-last[1, 0].clamp(-1, 1))))  # right axis rising = picture clockwise
    text = (f"last camera: position x={pos[0]:+.3f} y={pos[1]:+.3f} z={pos[2]:+.3f} (scene units)\n"
            f"looking {abs(yaw):.1f}\N{DEGREE SIGN} {'right' if yaw >= 0 else 'left'}, "
            f"{abs(pitch):.1f}\N{DEGREE SIGN} {'up' if pitch >= 0 else 'down'}, "
            f"picture rolled {abs(roll):.1f}\N{DEGREE SIGN} {'clockwise' if roll >= 0 else 'counter-clockwise'}")
    if trajectory.focal_scale is not None:
        text += f", focal x{float(trajectory.focal_scale[-1]):.2f}"
    return text


def plot_trajectory(
    trajectory: Trajectory,
    path: str | os.PathLike,
    image: Tensor | None = None,
    K: Tensor | None = None,
    title: str | None = None,
    image_title: str = "source frame",
    dpi: int = 110,
) -> Path:
    """Draw the trajectory's camera frustums in 3D (and a top view) into a PNG, atomically.

    Args:
        trajectory: poses relative to the source camera (scene units).
        path: output ``.png``.
        image: optional source frame ``(C, H, W)`` (or ``(T, C, H, W)``: the first is used) in [0, 1],
            shown on the source camera's image plane and as an inset.
        K: ``(3, 3)`` source intrinsics; default 60 degrees horizontal FOV at the image's size
            (384x256 without an image). Zoom presets scale it per frame.
        title: figure title (default: the trajectory's name).
        image_title: caption of the source-frame inset.
        dpi: resolution.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import cm
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    img = None if image is None else _as_hwc(image)
    height, width = img.shape[:2] if img is not None else (256, 384)
    K = intrinsics_from_fov(60.0, height, width) if K is None else torch.as_tensor(K).float()
    if tuple(K.shape) != (3, 3):
        raise RecaptureError(f"K must be (3, 3), got {tuple(K.shape)}.")
    Ks = trajectory.intrinsics_for(K).double().numpy()
    K0 = Ks[0] if trajectory.intrinsics is not None else K.double().numpy()
    c2w = trajectory.c2w.double().numpy()
    centres = c2w[:, :3, 3]
    pivot = None if trajectory.pivot is None else trajectory.pivot.double().numpy()

    pts = np.vstack([np.zeros((1, 3)), centres] + ([pivot[None]] if pivot is not None else []))
    extent = float(np.ptp(pts, axis=0).max())
    size = 0.3 * max(extent, 0.25 if pivot is None else 0.5 * float(np.linalg.norm(pivot)), 1e-3)

    fig = plt.figure(figsize=(13, 6.6), dpi=dpi)
    gs = fig.add_gridspec(2, 2, width_ratios=[1.75, 1.0], height_ratios=[1.0, 1.15], wspace=0.12, hspace=0.42)
    # fixed draw order (image plane below every line) reads better than mplot3d's depth sorting here
    ax = fig.add_subplot(gs[:, 0], projection="3d", computed_zorder=False)
    norm = Normalize(0, max(trajectory.num_frames - 1, 1))
    cmap = plt.get_cmap(_CMAP)

    source = _frustum(np.eye(4), K0, height, width, size)
    frusta = [_frustum(c2w[t], Ks[t], height, width, size) for t in range(trajectory.num_frames)]
    if img is not None:
        _image_on_plane(ax, source, img)
    last = trajectory.num_frames - 1
    keys = set(np.linspace(0, last, min(trajectory.num_frames, 5)).round().astype(int).tolist())
    for t, f in enumerate(frusta):  # every image rectangle, frustum edges only for a few key frames
        _draw_frustum(ax, f, cmap(norm(t)), lw=1.5 if t in (0, last) else 0.9, edges=t in keys)
    _draw_frustum(ax, source, "black", lw=2.2)
    ax.plot(*_to_plot(centres), color="0.4", lw=1.0, ls="--")
    ax.text(*_to_plot(source[4] + np.array([0.0, 0.12 * size, 0.0])), "source", color="black", fontsize=9)
    all_pts = np.vstack([source, *frusta] + ([pivot[None]] if pivot is not None else []))
    if pivot is not None:
        ax.scatter(*_to_plot(pivot[None]), color="crimson", marker="*", s=140, depthshade=False)
        ax.text(*_to_plot(pivot + np.array([0.04 * size, -0.1 * size, 0.0])), "pivot", color="crimson", fontsize=9)
        for idx in (0, trajectory.num_frames - 1):
            ax.plot(*_to_plot(np.stack([centres[idx], pivot])), color="crimson", lw=0.6, ls=":")
    lo, hi = all_pts.min(0), all_pts.max(0)
    mid, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * 1.08
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[2] - half, mid[2] + half)
    ax.set_zlim(mid[1] + half, mid[1] - half)  # inverted: +y (down) points down on the page
    ax.set_box_aspect((1, 1, 1))
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("x right")
    ax.set_ylabel("z forward")
    ax.set_zlabel("y down")
    ax.view_init(elev=22, azim=-118)
    ax.set_title("camera frustums (source camera in black)", fontsize=10)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6, pad=0.08, label="frame")

    ax_img = fig.add_subplot(gs[0, 1])
    if img is not None:
        ax_img.imshow(img)
        ax_img.set_title(image_title, fontsize=10)
    else:
        ax_img.text(0.5, 0.5, "no source frame", ha="center", va="center", color="0.5")
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    ax_img.text(0.0, -0.04, _summary(trajectory), transform=ax_img.transAxes, va="top", fontsize=8.5)

    ax_top = fig.add_subplot(gs[1, 1])
    ax_top.set_title("top view (x-z plane)", fontsize=10)
    fwd = c2w[:, :3, 2]
    arrow = 0.6 * size
    ax_top.quiver(0, 0, 0, arrow, color="black", angles="xy", scale_units="xy", scale=1, width=0.006)
    ax_top.quiver(centres[:, 0], centres[:, 2], fwd[:, 0] * arrow, fwd[:, 2] * arrow,
                  np.arange(trajectory.num_frames), cmap=cmap, norm=norm, angles="xy", scale_units="xy",
                  scale=1, width=0.005)
    ax_top.plot(centres[:, 0], centres[:, 2], color="0.4", lw=1.0, ls="--")
    for f, color in ((source, "black"), (frusta[-1], cmap(norm(last)))):  # horizontal field of view
        mid_l, mid_r = (f[1] + f[4]) / 2, (f[2] + f[3]) / 2
        wedge = np.stack([mid_l, f[0], mid_r])
        ax_top.plot(wedge[:, 0], wedge[:, 2], color=color, lw=0.8, alpha=0.7)
    ax_top.scatter([0], [0], color="black", s=30, zorder=3, label="source")
    if pivot is not None:
        ax_top.scatter([pivot[0]], [pivot[2]], color="crimson", marker="*", s=120, zorder=3, label="pivot")
    ax_top.set_xlabel("x right")
    ax_top.set_ylabel("z forward")
    ax_top.set_aspect("equal", adjustable="datalim")
    ax_top.grid(alpha=0.3)
    ax_top.legend(loc="best", fontsize=8)

    fig.suptitle(title or trajectory.name or "trajectory", fontsize=12)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
