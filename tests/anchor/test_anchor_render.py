"""render_anchor: analytic geometry (identity, plane shift, occlusion), splat modes, masks, errors."""

from __future__ import annotations

import math

import pytest
import torch
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

from recapture.anchor import AnchorVideo, FusionSettings, MaskSettings, SplatSettings, render_anchor
from recapture.utils import RecaptureError

H, W, F = 16, 32, 20.0


def intrinsics(f: float = F, h: int = H, w: int = W, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=dtype)


def translation(tx: float = 0.0, ty: float = 0.0, tz: float = 0.0, num: int = 1) -> torch.Tensor:
    c2w = torch.eye(4).repeat(num, 1, 1)
    c2w[:, :3, 3] = torch.tensor([tx, ty, tz])
    return c2w


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_identity_reproduces_input_exactly(mode: str) -> None:
    frames = torch.rand(3, 3, H, W)
    depth = torch.rand(3, 1, H, W) * 4 + 1
    out = render_anchor(frames, depth, intrinsics(), translation(num=3), splat=SplatSettings(mode=mode))
    assert isinstance(out, AnchorVideo)
    assert out.frames.shape == (3, 3, H, W) and out.mask.shape == (3, 1, H, W)
    torch.testing.assert_close(out.frames, frames, rtol=0, atol=0)
    assert bool((out.mask == 1).all())
    torch.testing.assert_close(out.depth, depth, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.coverage, torch.ones(3))


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize(("tx", "d"), [(1.0, 5.0), (-0.5, 2.5), (2.0, 4.0)])
def test_fronto_parallel_plane_shifts_by_f_t_over_d(mode: str, tx: float, d: float) -> None:
    shift = F * abs(tx) / d
    assert shift == int(shift)
    s = int(shift)
    frames = torch.rand(2, 3, H, W)
    depth = torch.full((2, 1, H, W), d)
    out = render_anchor(frames, depth, intrinsics(), translation(tx, num=2), splat=SplatSettings(mode=mode))
    if tx > 0:  # camera moves right: the image moves left, the right strip is uncovered
        torch.testing.assert_close(out.frames[..., : W - s], frames[..., s:], rtol=0, atol=0)
        assert bool((out.mask[..., : W - s] == 1).all()) and bool((out.mask[..., W - s :] == 0).all())
        assert bool((out.frames[..., W - s :] == 0).all())
    else:
        torch.testing.assert_close(out.frames[..., s:], frames[..., : W - s], rtol=0, atol=0)
        assert bool((out.mask[..., s:] == 1).all()) and bool((out.mask[..., :s] == 0).all())
    torch.testing.assert_close(out.coverage, torch.full((2,), (W - s) / W))


def _two_layers() -> tuple[torch.Tensor, torch.Tensor]:
    """Far textured plane at z=10 with a near red square at z=2 (rows 4..11, cols 12..19)."""
    frames = torch.rand(1, 3, H, W) * 0.5
    depth = torch.full((1, 1, H, W), 10.0)
    frames[..., 4:12, 12:20] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    depth[..., 4:12, 12:20] = 2.0
    return frames, depth


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_occlusion_near_surface_hides_far_one(mode: str) -> None:
    frames, depth = _two_layers()
    # camera moves right by 1: the square (z=2) shifts 10 px left, the plane (z=10) 2 px left.
    out = render_anchor(frames, depth, intrinsics(), translation(1.0), splat=SplatSettings(mode=mode))
    tol = 0.0 if mode == "hard" else 1e-6  # soft: the far plane keeps a weight of ~exp(-beta * 8 / z_mean)
    square = out.frames[0, :, 4:12, 2:10]
    torch.testing.assert_close(square, frames[0, :, 4:12, 12:20], rtol=0, atol=tol)
    # the plane behind the square's old place is revealed from column 10 on, except what the plane
    # itself shifted into: plane source column c lands at c - 2, so target columns 10..17 came
    # from plane columns 12..19, hidden behind the square in the source: a disocclusion 8 wide.
    assert bool((out.mask[0, 0, 4:12, 10:18] == 0).all())
    assert bool((out.mask[0, 0, 4:12, 18 : W - 2] == 1).all())
    torch.testing.assert_close(out.frames[0, :, 4:12, 18 : W - 2], frames[0, :, 4:12, 20:W], rtol=0, atol=tol)
    torch.testing.assert_close(out.depth[0, 0, 4:12, 2:10], torch.full((8, 8), 2.0), rtol=1e-6, atol=tol)


def test_hard_splat_is_deterministic_and_order_independent() -> None:
    frames = torch.rand(2, 3, H, W)
    depth = torch.randint(1, 4, (2, 1, H, W)).float()  # many exact depth ties
    c2w = translation(0.7, 0.2, -0.3, num=2)
    a = render_anchor(frames, depth, intrinsics(), c2w, splat=SplatSettings(footprint=3))
    b = render_anchor(frames, depth, intrinsics(), c2w, splat=SplatSettings(footprint=3))
    assert torch.equal(a.frames, b.frames) and torch.equal(a.mask, b.mask)


def test_footprint_closes_pinholes_when_magnified() -> None:
    frames = torch.rand(1, 3, H, W)
    depth = torch.full((1, 1, H, W), 2.0)
    c2w = translation(tz=0.6)  # dolly in: magnification 2 / 1.4 -> gaps between splatted pixels
    interior = (slice(None), slice(None), slice(3, H - 3), slice(6, W - 6))
    thin = render_anchor(frames, depth, intrinsics(), c2w, splat=SplatSettings(footprint=1))
    thick = render_anchor(frames, depth, intrinsics(), c2w, splat=SplatSettings(footprint=3))
    assert float(thin.mask[interior].mean()) < 0.9
    assert bool((thick.mask[interior] == 1).all())
    closed = render_anchor(frames, depth, intrinsics(), c2w, mask=MaskSettings(dilate=1, erode=1))
    assert bool((closed.mask[interior] == 1).all())
    filled = closed.frames[interior][thin.mask[interior].expand(-1, 3, -1, -1) == 0]
    assert bool((filled > 0).all())  # pinholes got neighbouring colours, not black


@pytest.mark.parametrize("footprint", [3, 5])
@pytest.mark.parametrize(
    "depth_map",
    [
        # a ground plane seen at a slant: each row 5% farther than the one below it
        lambda: 2.0 * 1.05 ** torch.arange(H, 0, -1.0)[:, None].expand(H, W),
        # a depth step: the near left half must not grow over the visible far right half
        lambda: torch.cat([torch.full((H, W // 2), 2.0), torch.full((H, W // 2), 3.0)], 1),
        # a near square on a far plane, both seen
        lambda: _two_layers()[1][0, 0],
    ],
    ids=["slanted_floor", "depth_step", "square"],
)
def test_footprint_keeps_every_visible_point_at_the_source_camera(footprint: int, depth_map) -> None:
    """Covered pixels keep their own point: the footprint moves no surface, grows no edge over
    visible background, so the source camera gives the source exactly. (Until 2026-12-07 the
    slanted floor moved down a row and the near half grew by a pixel: a neighbour 1% nearer won.)"""
    frames = torch.rand(1, 3, H, W)
    depth = depth_map()[None, None].contiguous()
    out = render_anchor(frames, depth, intrinsics(), translation(), splat=SplatSettings(footprint=footprint))
    assert torch.equal(out.frames, frames) and bool((out.mask == 1).all())


def test_footprint_keeps_the_example_scene_at_the_source_camera() -> None:
    """The example scene (floor, wall, spheres) through the identity camera, footprint 3: the source
    bit for bit at 64x96 and 256x384 (the old 1% rule changed 32% / 17% of the pixels)."""
    from recapture.data.example import make_example_clip

    for h, w in ((64, 96), (256, 384)):
        video, depth, K = make_example_clip(num_frames=2, height=h, width=w)
        out = render_anchor(video.frames, depth, K, translation(num=2), splat=SplatSettings(footprint=3))
        assert torch.equal(out.frames, video.frames), (h, w)


@pytest.mark.parametrize("footprint", [3, 5])
def test_footprint_covers_background_seen_through_pinholes(footprint: int) -> None:
    """Dolly in on a near square (z=2) over a far plane (z=10): the square is magnified 2/1.4, the
    plane barely, so rows and columns of background points show through cracks in the square.
    The footprint closes them with the square's colour, including where an empty crack row crosses
    a background column, and the square grows by no pixel beyond its true outline."""
    frames, depth = _two_layers()
    frames[...] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]  # far plane: blue
    frames[..., 4:12, 12:20] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # near square: red
    c2w = translation(tz=0.6)
    # the square's source pixel edges 3.5 .. 11.5 (rows) and 11.5 .. 19.5 (columns) land at
    # (edge - centre) * 2 / 1.4 + centre: rows 2.5 .. 13.9, columns 10.5 .. 21.9 -> pixels 3..13, 11..21
    square = torch.zeros(H, W, dtype=torch.bool)
    square[3:14, 11:22] = True
    thin = render_anchor(frames, depth, intrinsics(), c2w, splat=SplatSettings(footprint=1))
    thick = render_anchor(frames, depth, intrinsics(), c2w, splat=SplatSettings(footprint=footprint))
    assert bool((thin.frames[0, 2][square] == 1).any())  # without a footprint, blue shows through
    red = (thick.frames[0, 0] == 1) & (thick.frames[0, 2] == 0)
    assert torch.equal(red, square)
    assert bool((thick.frames[0, 2][~square] == 1).all())  # the rest is the far plane


def test_footprint_closes_cracks_two_pixels_wide() -> None:
    """Dolly in to a third of a small near square's depth: its points land 3 px apart (rows 3, 6, 9,
    12; columns 11, 14, 17, 20) with cracks 2 px wide, full of far-plane points. Footprint 3 covers
    every crack pixel inside the square's hull with the square (a side point 2 px away counts); outside
    the hull it takes only pixels no point landed in (the far plane has its own empty cracks)."""
    frames = torch.zeros(1, 3, H, W)
    frames[:, 2] = 1.0  # far plane: blue
    depth = torch.full((1, 1, H, W), 10.0)
    frames[..., 6:10, 14:18] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # near square: red
    depth[..., 6:10, 14:18] = 2.0
    out = render_anchor(frames, depth, intrinsics(), translation(tz=4.0 / 3.0), splat=SplatSettings(footprint=3))
    hull = torch.zeros(H, W, dtype=torch.bool)
    hull[3:13, 11:21] = True
    thin = render_anchor(frames, depth, intrinsics(), translation(tz=4.0 / 3.0), splat=SplatSettings(footprint=1))
    assert int((thin.frames[0, 0] == 1).sum()) == 16  # the 16 square points alone
    red = (out.frames[0, 0] == 1) & (out.frames[0, 2] == 0)
    assert bool(red[hull].all())
    assert bool((thin.mask[0, 0][red & ~hull] == 0).all()) and bool(out.mask.all())


def test_mask_erode_widens_the_uncovered_strip() -> None:
    frames = torch.rand(1, 3, H, W) + 0.1
    depth = torch.full((1, 1, H, W), 5.0)
    out = render_anchor(frames, depth, intrinsics(), translation(1.0), mask=MaskSettings(erode=2))
    assert bool((out.mask[..., W - 6 :] == 0).all()) and bool((out.mask[..., : W - 6] == 1).all())
    assert bool((out.frames[..., W - 6 :] == 0).all())


def test_zoom_through_target_intrinsics() -> None:
    h, w = 17, 33  # odd sizes: the principal point (16, 8) is a pixel centre
    frames = torch.rand(1, 3, h, w)
    depth = torch.full((1, 1, h, w), 3.0)
    out = render_anchor(frames, depth, intrinsics(F, h, w), translation(), K_target=intrinsics(2 * F, h, w))
    # focal x2 about the principal point: source pixel (u, v) lands on (2u - 16, 2v - 8) exactly
    src = frames[0, :, 4:13, 8:25]
    torch.testing.assert_close(out.frames[0, :, 0:17:2, 0:33:2], src, rtol=0, atol=0)
    assert bool((out.mask[0, 0, 1::2, :] == 0).all())  # magnified x2: every other row is a gap


def test_soft_splat_gradcheck() -> None:
    torch.manual_seed(3)
    h, w = 5, 6
    dt = torch.float64
    frames = torch.rand(1, 3, h, w, dtype=dt, requires_grad=True)
    depth = (2 + torch.rand(1, 1, h, w, dtype=dt)).requires_grad_()
    rvec = torch.tensor([[0.02, -0.03, 0.01]], dtype=dt, requires_grad=True)
    tvec = torch.tensor([0.11, -0.07, 0.05], dtype=dt, requires_grad=True)
    K = intrinsics(6.0, h, w, dt)

    def fn(frames, depth, rvec, tvec):
        top = torch.cat([axis_angle_to_rotation_matrix(rvec)[0], tvec[:, None]], 1)
        c2w = torch.cat([top, torch.tensor([[0, 0, 0, 1]], dtype=dt)])[None]
        out = render_anchor(frames, depth, K, c2w, splat=SplatSettings(mode="soft", soft_beta=5.0))
        return out.frames, out.depth

    assert torch.autograd.gradcheck(fn, (frames, depth, rvec, tvec), eps=1e-6, atol=1e-5, fast_mode=True)
    # and the gradient actually reaches every input
    frames_out, _ = fn(frames, depth, rvec, tvec)
    grads = torch.autograd.grad(frames_out.sum(), (frames, depth, rvec, tvec))
    assert all(float(g.abs().sum()) > 0 for g in grads)


def _moving_square_scene(num: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Static textured wall at z=10, a red square at z=2 moving 4 px right per frame."""
    g = torch.Generator().manual_seed(0)
    wall = torch.rand(3, H, W, generator=g) * 0.5
    wall[0] = 0  # the red channel marks the square alone
    frames = wall.repeat(num, 1, 1, 1)
    depth = torch.full((num, 1, H, W), 10.0)
    for t in range(num):
        c0 = 4 + 4 * t
        frames[t, :, 4:12, c0 : c0 + 8] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
        depth[t, :, 4:12, c0 : c0 + 8] = 2.0
    return frames, depth, wall


def test_fuse_neighbors_fills_disocclusions_with_real_static_pixels() -> None:
    frames, depth, wall = _moving_square_scene()
    c2w = translation(1.0, num=5)  # square shifts 10 px, wall 2 px: 8 px revealed behind it
    plain = render_anchor(frames, depth, intrinsics(), c2w)
    fused = render_anchor(frames, depth, intrinsics(), c2w, fusion=FusionSettings(neighbors=2))
    t = 2
    assert float(fused.coverage[t]) > float(plain.coverage[t])
    new = (fused.mask[t, 0] == 1) & (plain.mask[t, 0] == 0)
    assert int(new.sum()) >= 8 * 8
    # every filled pixel shows the wall exactly where it is (target column u <- wall column u + 2)
    v, u = new.nonzero(as_tuple=True)
    torch.testing.assert_close(fused.frames[t, :, v, u], wall[:, v, u + 2], rtol=0, atol=0)
    # no ghosts of the neighbours' squares: red appears exactly where it does without fusion
    assert torch.equal(fused.frames[t, 0] > 0.9, plain.frames[t, 0] > 0.9)
    assert fused.info["fused_points"][t] > 0


def test_neighbor_points_follow_a_moving_source_camera() -> None:
    from recapture.anchor import neighbor_points

    frames = torch.rand(2, 3, H, W)
    depth = torch.full((2, 1, H, W), 10.0)  # a wall at z = 10
    source_c2w = translation(num=2)
    source_c2w[1, 0, 3] = 1.0  # the source camera of frame 1 is 1 unit to the right
    Ks = intrinsics().expand(2, 3, 3)
    pts, col = neighbor_points(frames, depth, Ks, t=1, radius=1, source_c2w=source_c2w)
    # frame 0's wall seen from camera 1 shifts f * 1 / 10 = 2 px left: its 2 leftmost columns
    # leave frame 1's view and are kept ("outside"); the rest coincide with frame 1's wall: dropped
    assert pts.shape == (2 * H, 3)
    torch.testing.assert_close(pts[:, 2], torch.full((2 * H,), 10.0))
    torch.testing.assert_close(col, frames[0, :, :, :2].permute(1, 2, 0).reshape(-1, 3))


def test_source_mask_drops_points_and_allows_depth_holes() -> None:
    frames = torch.rand(1, 3, H, W)
    depth = torch.full((1, 1, H, W), 4.0)
    depth[..., :4, :] = 0  # sensor holes
    out = render_anchor(frames, depth, intrinsics(), translation(), source_mask=(depth > 0).float())
    assert bool((out.mask[..., :4, :] == 0).all()) and bool((out.mask[..., 4:, :] == 1).all())


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_bad_depth_values_name_the_frame(bad: float) -> None:
    frames = torch.rand(3, 3, H, W)
    depth = torch.ones(3, 1, H, W)
    depth[1, 0, 2, 3] = bad
    with pytest.raises(RecaptureError, match=r"frame 1\b"):
        render_anchor(frames, depth, intrinsics(), translation(num=3))


def test_shape_mismatches_are_reported_with_shapes() -> None:
    frames = torch.rand(3, 3, H, W)
    with pytest.raises(
        RecaptureError, match=r"depth \(3, 1, 16, 30\) does not match frames \(3, 3, 16, 32\)"
    ):
        render_anchor(frames, torch.ones(3, 1, H, W - 2), intrinsics(), translation(num=3))
    with pytest.raises(
        RecaptureError, match="trajectory length mismatch: c2w has 2 poses but the video has 3"
    ):
        render_anchor(frames, torch.ones(3, 1, H, W), intrinsics(), translation(num=2))
    with pytest.raises(RecaptureError, match=r"K must be \(3, 3\) or \(3, 3, 3\)"):
        render_anchor(frames, torch.ones(3, 1, H, W), intrinsics()[None].repeat(2, 1, 1), translation(num=3))
    with pytest.raises(RecaptureError, match=r"frames must be \(T, 3, H, W\)"):
        render_anchor(frames[:, :2], torch.ones(3, 1, H, W), intrinsics(), translation(num=3))
    with pytest.raises(RecaptureError, match="not orthonormal"):
        render_anchor(frames, torch.ones(3, 1, H, W), intrinsics(), 2 * translation(num=3))


def test_all_points_behind_the_camera_is_an_error() -> None:
    frames = torch.rand(2, 3, H, W)
    depth = torch.full((2, 1, H, W), 3.0)
    with pytest.raises(RecaptureError, match="behind the camera"):
        render_anchor(frames, depth, intrinsics(), translation(tz=5.0, num=2))
    turn = translation(num=2)
    turn[:, :3, :3] = axis_angle_to_rotation_matrix(torch.tensor([[0.0, math.pi, 0.0]]))
    with pytest.raises(RecaptureError, match="no source pixel in view"):
        render_anchor(frames, depth, intrinsics(), turn)


def test_some_empty_frames_warn_and_name_them() -> None:
    frames = torch.rand(3, 3, H, W)
    depth = torch.full((3, 1, H, W), 3.0)
    c2w = translation(num=3)
    c2w[2, 2, 3] = 5.0
    with pytest.warns(UserWarning, match=r"anchor frames \[2\] are empty"):
        out = render_anchor(frames, depth, intrinsics(), c2w)
    assert out.info["empty_frames"] == [2]
