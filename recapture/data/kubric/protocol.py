"""GCD's Kubric-4D evaluation pairs (benchmarks spec 1.5-1.7): input, ground truth and occlusion masks.

Per clip frame, all 16 views are unprojected with their GT depth into one merged point cloud. The
**input** video is that cloud rendered along the source trajectory (static at ``spherical_start``,
which is view 4 in GCD's controls), the **ground truth** the same cloud rendered along the target
trajectory; both with GCD's soft z-buffer splat at 420x280, ``blur_into_black(21)`` and a bilinear
resize. The **occluded** mask reprojects only the input view's own RGB-D (view 4) into the target
camera with the same splat, ``blur_into_black(3)`` and resize; occluded = pixels whose RGB sum is
<= 1e-7.

Defaults follow the spec. GCD's own code differs in small ways that are options here (see
:meth:`ProtocolSettings.gcd_parity`): its depth conversion approximation, its integer pixel-centre
grid and its float16 / uint8 point-cloud cache.

Output resolutions ``(H, W)``: ``"recapture"`` = (256, 384) (ReCapture / GCD, 384x256) and
``"cognvs"`` = (384, 576) (CogNVS evaluates at 576x384, the dataset's size). How CogNVS made its
ground truth at that size is not published; by default it is the same 420x280 render resized up.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

from recapture.cameras.poses import invert_pose
from recapture.data.kubric.cloud import (
    output_intrinsics,
    render_intrinsics,
    render_video_frame,
    resample_depth,
    view_point_cloud,
)
from recapture.data.kubric.controls import (
    ControlsFile,
    Mode,
    SceneControls,
    controls_for_scene,
    sample_fallback_controls,
    spherical_trajectories,
)
from recapture.data.kubric.geometry import INPUT_VIEW, DepthConversion, spherical_pose
from recapture.data.kubric.reader import KubricScene
from recapture.data.kubric.splat import PixelGrid
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)

__all__ = ["RESOLUTIONS", "EvalSample", "ProtocolSettings", "make_eval_sample"]

RESOLUTIONS: dict[str, tuple[int, int]] = {"recapture": (256, 384), "cognvs": (384, 576)}
Resolution = Literal["recapture", "cognvs"] | tuple[int, int]
ControlsSource = Literal["gcd", "fallback-sampler"]


@dataclass(frozen=True)
class ProtocolSettings:
    """Knobs of the GCD protocol; the defaults are the spec's.

    Attributes:
        num_frames: clip length (14).
        input_view: the input camera (view 4).
        render_size: ``(H, W)`` of the point-cloud render before the resize (280, 420).
        blur_kernel: ``blur_into_black`` kernel for input and ground truth (21, sigma k/4).
        mask_blur_kernel: ``blur_into_black`` kernel for the occlusion reprojection (3).
        neighbour_weight: splat weight share of the +x, +y, +x+y neighbours (0.02).
        near: points with camera z <= near are dropped (0.1 m).
        occluded_threshold: occluded where the reprojected RGB sum is <= this (1e-7).
        depth_conversion: Euclidean -> planar depth: ``"exact"`` (spec) or ``"gcd"`` (GCD's approximation).
        pixel_grid: ``"centre"`` (pixel centres at +0.5, recapture's convention) or ``"gcd"``
            (GCD's integer pixel centres for unprojection and splatting).
        quantize_cloud: store points as float16 and colours as uint8 like GCD's point-cloud cache.
    """

    num_frames: int = 14
    input_view: int = INPUT_VIEW
    render_size: tuple[int, int] = (280, 420)
    blur_kernel: int = 21
    mask_blur_kernel: int = 3
    neighbour_weight: float = 0.02
    near: float = 0.1
    occluded_threshold: float = 1e-7
    depth_conversion: DepthConversion = "exact"
    pixel_grid: PixelGrid = "centre"
    quantize_cloud: bool = False

    @classmethod
    def gcd_parity(cls, **overrides: Any) -> ProtocolSettings:
        """Settings that mimic GCD's code: approximate depth conversion, integer pixel grid, quantised cloud."""
        return replace(cls(depth_conversion="gcd", pixel_grid="gcd", quantize_cloud=True), **overrides)


@dataclass
class EvalSample:
    """One evaluation pair (GCD protocol), everything on the CPU.

    Attributes:
        scene_id: ``"scnXXXXX"``.
        mode: ``"gradual"`` or ``"direct"``.
        input_video: ``(T, 3, H, W)`` in [0, 1]: the merged cloud rendered along the source trajectory.
        target_video: ``(T, 3, H, W)`` in [0, 1]: the ground truth along the target trajectory.
        occluded_mask: ``(T, 1, H, W)`` float {0, 1}: 1 where the input view cannot see the target pixel.
        input_depth: ``(T, 1, H, W)`` planar depth (metres) of the input video: the input view's GT
            depth resampled at the output pixel centres (bilinear on smooth surfaces, nearest at
            depth edges) when the source camera is that view (always with GCD's controls and the
            fallback sampler); otherwise the soft-splat weighted mean z, holes filled, nearest resize.
        K: ``(3, 3)`` pixel intrinsics of all videos at ``(H, W)`` (pixel centres at +0.5).
        source_c2w: ``(T, 4, 4)`` OpenCV world poses of the input camera.
        target_c2w: ``(T, 4, 4)`` OpenCV world poses of the target camera.
        relative_c2w: ``(T, 4, 4)`` ``inv(source_c2w) @ target_c2w``: the target camera in each source
            frame's camera coordinates (metres = depth units), what :func:`recapture.anchor.render_anchor` takes.
        fps: ``round(scene_fps / frame_skip)``.
        frame_indices: ``(T,)`` dataset frames of the clip.
        controls: the controls used.
        controls_source: ``"gcd"`` (an official controls file) or ``"fallback-sampler"``.
        settings: the :class:`ProtocolSettings` as a dict, plus the resolution.
    """

    scene_id: str
    mode: str
    input_video: Tensor
    target_video: Tensor
    occluded_mask: Tensor
    input_depth: Tensor
    K: Tensor
    source_c2w: Tensor
    target_c2w: Tensor
    relative_c2w: Tensor
    fps: float
    frame_indices: Tensor
    controls: SceneControls
    controls_source: ControlsSource
    settings: dict[str, Any]

    @property
    def visible_mask(self) -> Tensor:
        """``(T, 1, H, W)`` float {0, 1}: complement of :attr:`occluded_mask`."""
        return 1.0 - self.occluded_mask


def _resolution(resolution: Resolution) -> tuple[int, int]:
    if isinstance(resolution, str):
        if resolution not in RESOLUTIONS:
            raise RecaptureError(
                f"resolution={resolution!r} is unknown; use one of {sorted(RESOLUTIONS)} or (H, W)"
            )
        return RESOLUTIONS[resolution]
    if (
        isinstance(resolution, (tuple, list))
        and len(resolution) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in resolution)
    ):
        return int(resolution[0]), int(resolution[1])
    raise RecaptureError(
        f"resolution={resolution!r} must be 'recapture', 'cognvs' or (H, W) positive integers"
    )


def _choose_controls(
    scene: KubricScene,
    controls: SceneControls | ControlsFile | None,
    sample: int | str,
    seed: int,
    settings: ProtocolSettings,
) -> tuple[SceneControls, ControlsSource]:
    if controls is None:
        chosen = sample_fallback_controls(scene.scene_id, seed, scene.num_frames, settings.num_frames)
        log.info(
            "%s: no controls given; using the seeded fallback sampler (not GCD's evaluation pairs)",
            scene.scene_id,
        )
        return chosen, "fallback-sampler"
    if isinstance(controls, SceneControls):
        return controls, "gcd"
    if isinstance(controls, dict):
        return controls_for_scene(controls, scene.scene_id, sample), "gcd"
    raise RecaptureError(
        f"controls must be SceneControls, a parsed controls file (read_controls) or None, got {type(controls).__name__}"
    )


def make_eval_sample(
    scene: KubricScene,
    controls: SceneControls | ControlsFile | None = None,
    mode: Mode = "gradual",
    resolution: Resolution = "recapture",
    seed: int = 0,
    settings: ProtocolSettings | None = None,
    sample: int | str = 0,
    device: str | torch.device | None = None,
) -> EvalSample:
    """Build one GCD evaluation pair for ``scene`` (see the module docstring).

    Args:
        scene: a scene from :func:`~recapture.data.kubric.load_scene` with all views loaded.
        controls: one pair's :class:`SceneControls`, a parsed official controls file (looked up by
            scene id and ``sample``), or None for the seeded fallback sampler (labelled as such).
        mode: ``"gradual"`` (target moves linearly from the input pose) or ``"direct"`` (target at the
            end pose throughout).
        resolution: ``"recapture"`` (256, 384), ``"cognvs"`` (384, 576) or an ``(H, W)``; same aspect
            as ``settings.render_size``.
        seed: seed of the fallback sampler (ignored with controls).
        settings: protocol knobs (default: the spec's).
        sample: which sample of a controls file (``0`` -> ``"sample_00"``).
        device: where to unproject and splat (default CPU); outputs are returned on the CPU.

    Returns:
        An :class:`EvalSample`.
    """
    settings = settings or ProtocolSettings()
    size = _resolution(resolution)
    rh, rw = settings.render_size
    if abs(size[1] / size[0] - rw / rh) > 1e-3:
        raise RecaptureError(
            f"resolution {size} (H, W) and render_size {settings.render_size} must have the same aspect ratio; "
            "change one of them"
        )
    if settings.input_view not in scene.views:
        raise RecaptureError(
            f"input view {settings.input_view} is not loaded for {scene.scene_id}; load all 16 views"
        )
    chosen, source = _choose_controls(scene, controls, sample, seed, settings)
    frames = chosen.frame_indices(settings.num_frames)
    if frames[-1] >= scene.num_frames:
        raise RecaptureError(
            f"controls frame_start={chosen.frame_start}, frame_skip={chosen.frame_skip} need frame {frames[-1]} but "
            f"{scene.scene_id} has {scene.num_frames} frames"
        )
    dev = torch.device(device) if device is not None else torch.device("cpu")
    sph_src, sph_dst = spherical_trajectories(chosen, mode, settings.num_frames)
    source_c2w = spherical_pose(*sph_src.unbind(-1)).double()
    target_c2w = spherical_pose(*sph_dst.unbind(-1)).double()
    # GCD's controls start at the input view's pose: check it, as GCD's loader does
    view_poses = scene.c2w(settings.input_view)[frames]
    mismatch = float((source_c2w - view_poses).abs().sum(dim=(-2, -1)).max())
    if mismatch > 5e-3:
        log.warning(
            "%s: the source camera %s differs from view %d's pose (sum |diff| = %.4f); occlusion masks "
            "assume they match and input_depth falls back to the rendered depth",
            scene.scene_id,
            chosen.spherical_start,
            settings.input_view,
            mismatch,
        )
    depth_from_view = mismatch <= 5e-3  # then the input view's GT depth is the input video's depth
    K_render = render_intrinsics(scene, settings.input_view, settings.render_size)
    K_out = output_intrinsics(K_render, settings.render_size, size, settings.pixel_grid)
    splat = {
        "render_size": settings.render_size,
        "size": size,
        "neighbour_weight": settings.neighbour_weight,
        "near": settings.near,
        "pixel_grid": settings.pixel_grid,
    }
    inputs, targets, masks, depths = [], [], [], []
    for i, t in enumerate(frames):
        clouds = {
            v: view_point_cloud(
                scene, v, t, settings.depth_conversion, settings.pixel_grid, settings.quantize_cloud, dev
            )
            for v in scene.views
        }
        points = torch.cat([c[0] for c in clouds.values()])
        colours = torch.cat([c[1] for c in clouds.values()])
        rgb, depth = render_video_frame(
            points,
            colours,
            source_c2w[i],
            K_render,
            blur_kernel=settings.blur_kernel,
            with_depth=not depth_from_view,
            **splat,
        )
        if depth_from_view:
            gt = scene.read_depth(settings.input_view, t, settings.depth_conversion).double()
            depth = resample_depth(gt, scene.intrinsics(settings.input_view), K_out, size)[0].float()
        inputs.append(rgb.cpu())
        depths.append(depth.cpu())
        rgb, _ = render_video_frame(
            points, colours, target_c2w[i], K_render, blur_kernel=settings.blur_kernel, **splat
        )
        targets.append(rgb.cpu())
        # occlusion: only the input view's own RGB-D, reprojected into the target camera
        own_points, own_colours = clouds[settings.input_view]
        reproj, _ = render_video_frame(
            own_points, own_colours, target_c2w[i], K_render, blur_kernel=settings.mask_blur_kernel, **splat
        )
        masks.append((reproj.abs().sum(0, keepdim=True) <= settings.occluded_threshold).float().cpu())
    return EvalSample(
        scene_id=scene.scene_id,
        mode=mode,
        input_video=torch.stack(inputs),
        target_video=torch.stack(targets),
        occluded_mask=torch.stack(masks),
        input_depth=torch.stack(depths),
        K=K_out.float(),
        source_c2w=source_c2w.float(),
        target_c2w=target_c2w.float(),
        relative_c2w=(invert_pose(source_c2w) @ target_c2w).float(),
        fps=float(chosen.fps(scene.fps)),
        frame_indices=torch.tensor(frames, dtype=torch.int64),
        controls=chosen,
        controls_source=source,
        settings={**asdict(settings), "resolution": list(size), "seed": seed},
    )
