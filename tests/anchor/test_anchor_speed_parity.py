"""The anchor renderer's outputs are bit-for-bit what they were before the speed work.

Every case renders a fixed seeded scene twice on the machine under test: with ``render_anchor`` and
with ``reference_renderer.reference_render``, a frozen copy of the renderer as it was before it was
optimised (commit 75345d5), and requires ``torch.equal`` frames, mask and depth. Any change to the
arithmetic (key packing, projection order, tie-breaking, mask refinement) shows up as a difference.
Both renderers run on the same CPU with the same torch build, so the check is machine-independent
(recorded digests were not: float results differ between e.g. AVX2 and AVX-512 kernels).

A second, independent check compares the hard footprint-1 renderer with a naive z-buffer
(per-pixel minimum depth, then the lowest point index among exact depth ties).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from kornia.geometry.camera import project_points
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

import recapture.anchor.splat as splat_module
from recapture.anchor import (
    FusionSettings,
    MaskSettings,
    SplatSettings,
    render_anchor,
    splat_hard,
    splat_soft,
)
from recapture.anchor.points import depth_to_points, invert_rigid, transform
from recapture.anchor.render import NEAR_FRACTION
from recapture.utils import RecaptureError

pytestmark = pytest.mark.usefixtures("one_thread")


def _intrinsics(f: float, h: int, w: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([[f, 0, (w - 1) / 2], [0, 0.9 * f, (h - 1) / 2 + 0.3], [0, 0, 1]], dtype=dtype)


def _poses(t: int, g: torch.Generator, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """Small random rotations (up to ~6 degrees) and translations: occlusions and disocclusions."""
    rvec = (torch.rand(t, 3, generator=g, dtype=torch.float64) - 0.5) * 0.2
    tvec = (torch.rand(t, 3, generator=g, dtype=torch.float64) - 0.5) * scale
    c2w = torch.eye(4, dtype=torch.float64).repeat(t, 1, 1)
    c2w[:, :3, :3] = axis_angle_to_rotation_matrix(rvec)
    c2w[:, :3, 3] = tvec
    return c2w.to(dtype)


def _scene(
    seed: int, t: int, h: int, w: int, ties: bool = False, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Random colours, depth in [1, 4] (integer depths with ``ties``: many exact z-buffer ties)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(t, 3, h, w, generator=g, dtype=dtype)
    if ties:
        depth = torch.randint(1, 4, (t, 1, h, w), generator=g).to(dtype)
    else:
        depth = 1 + 3 * torch.rand(t, 1, h, w, generator=g, dtype=dtype)
    return {
        "frames": frames,
        "depth": depth,
        "K": _intrinsics(0.8 * w, h, w, dtype),
        "c2w": _poses(t, g, dtype),
    }


def _case_zoom() -> dict[str, Any]:
    s = _scene(3, 3, 20, 28)
    s["K_target"] = torch.stack([_intrinsics(f, 20, 28) for f in (22.4, 30.0, 16.0)])
    return s


def _case_source_mask_per_frame_k() -> dict[str, Any]:
    s = _scene(4, 3, 18, 30)
    g = torch.Generator().manual_seed(40)
    s["source_mask"] = (torch.rand(3, 1, 18, 30, generator=g) > 0.2).float()
    s["K"] = torch.stack([_intrinsics(f, 18, 30) for f in (24.0, 25.0, 26.0)])
    return s


def _case_dolly_out_ties() -> dict[str, Any]:
    """Integer depths and a pure backward translation: several points per pixel at exactly equal z."""
    s = _scene(8, 2, 24, 40, ties=True)
    s["c2w"] = torch.eye(4).repeat(2, 1, 1)
    s["c2w"][:, 2, 3] = torch.tensor([-1.0, -3.0])
    return s


def _case_partly_behind() -> dict[str, Any]:
    """A forward move past part of the scene: the points nearer than 1.2 end up behind the camera."""
    s = _scene(9, 2, 24, 40)
    s["c2w"][:, 2, 3] = 1.2
    return s


def _case_one_frame_behind() -> dict[str, Any]:
    """Frame 1 moves past every point (an empty frame, with a warning), frames 0 and 2 do not."""
    s = _scene(10, 3, 24, 40)
    s["c2w"][1, 2, 3] = 6.0
    return s


def _case_source_mask_fp3() -> dict[str, Any]:
    s = _case_source_mask_per_frame_k()
    s["K"] = s["K"][0]
    return s


def _case_bench_like() -> dict[str, Any]:
    """The benchmark's kind of scene at 4x64x96: a floor ending at a backdrop, orbiting 10 degrees.

    Built here from torch alone so that changes to the trajectory or depth-prior code elsewhere
    cannot change the recorded digests.
    """
    g = torch.Generator().manual_seed(0)
    t, h, w = 4, 64, 96
    frames = torch.rand(t, 3, h, w, generator=g)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    v_h = 0.4 * (h - 1)
    floor = (h - 1 - v_h) / (rows - v_h).clamp_min(1e-3)
    depth = floor.clamp(max=3.0)[None, None] * (1 + 0.05 * torch.rand(t, 1, h, w, generator=g))
    angle = torch.linspace(0, math.radians(10), t, dtype=torch.float64)
    pivot = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64).repeat(t, 1, 1)
    c2w[:, :3, :3] = axis_angle_to_rotation_matrix(torch.stack([0 * angle, angle, 0 * angle], 1))
    c2w[:, :3, 3] = pivot - c2w[:, :3, :3] @ pivot  # rotate about a point 2 units ahead
    f = (w / 2) / math.tan(math.radians(30))
    return {"frames": frames, "depth": depth, "K": _intrinsics(f, h, w), "c2w": c2w.float()}


CASES: dict[str, tuple[Callable[[], dict[str, Any]], dict[str, Any]]] = {
    "hard_fp1": (lambda: _scene(0, 3, 24, 40), {}),
    "hard_fp1_ties": (lambda: _scene(1, 3, 24, 40, ties=True), {}),
    "hard_fp3_ties": (lambda: _scene(1, 3, 24, 40, ties=True), {"splat": SplatSettings(footprint=3)}),
    "hard_fp5": (lambda: _scene(2, 2, 24, 40), {"splat": SplatSettings(footprint=5)}),
    "hard_fp1_float64": (lambda: _scene(5, 2, 16, 24, dtype=torch.float64), {}),
    "hard_fp3_float64": (
        lambda: _scene(5, 2, 16, 24, dtype=torch.float64), {"splat": SplatSettings(footprint=3)}
    ),
    "hard_dilate_erode": (lambda: _scene(0, 3, 24, 40), {"mask": MaskSettings(dilate=1, erode=2)}),
    "hard_fp3_closing": (
        lambda: _scene(6, 2, 24, 40),
        {"splat": SplatSettings(footprint=3), "mask": MaskSettings(dilate=2, erode=2)}
    ),
    "hard_zoom": (_case_zoom, {}),
    "hard_source_mask_per_frame_K": (_case_source_mask_per_frame_k, {}),
    "hard_fuse_neighbors": (lambda: _scene(7, 4, 16, 24), {"fusion": FusionSettings(neighbors=1)}),
    "hard_dolly_out_ties": (_case_dolly_out_ties, {}),
    "hard_fp3_dolly_out_ties": (_case_dolly_out_ties, {"splat": SplatSettings(footprint=3)}),
    "hard_partly_behind": (_case_partly_behind, {}),
    "hard_fp3_source_mask": (_case_source_mask_fp3, {"splat": SplatSettings(footprint=3)}),
    "hard_one_frame_behind": (_case_one_frame_behind, {}),
    "hard_fp3_one_frame_behind": (_case_one_frame_behind, {"splat": SplatSettings(footprint=3)}),
    "soft": (lambda: _scene(0, 3, 24, 40), {"splat": SplatSettings(mode="soft")}),
    "soft_partly_behind": (_case_partly_behind, {"splat": SplatSettings(mode="soft")}),
    "soft_source_mask_per_frame_K": (_case_source_mask_per_frame_k, {"splat": SplatSettings(mode="soft")}),
    "soft_fuse_neighbors": (
        lambda: _scene(7, 4, 16, 24),
        {"splat": SplatSettings(mode="soft"), "fusion": FusionSettings(neighbors=1)}
    ),
    "soft_ties_dilate": (
        lambda: _scene(1, 2, 24, 40, ties=True),
        {"splat": SplatSettings(mode="soft"), "mask": MaskSettings(dilate=1)}
    ),
    "soft_zoom_beta": (_case_zoom, {"splat": SplatSettings(mode="soft", soft_beta=20.0)}),
    "soft_float64": (
        lambda: _scene(5, 2, 16, 24, dtype=torch.float64), {"splat": SplatSettings(mode="soft")}
    ),
    "soft_negative_beta": (
        lambda: _scene(0, 3, 24, 40), {"splat": SplatSettings(mode="soft", soft_beta=-5.0)}
    ),
    "soft_dolly_out_ties": (_case_dolly_out_ties, {"splat": SplatSettings(mode="soft")}),
    "soft_one_frame_behind": (_case_one_frame_behind, {"splat": SplatSettings(mode="soft")}),
    "bench_hard_fp1": (_case_bench_like, {}),
    "bench_hard_fp3": (_case_bench_like, {"splat": SplatSettings(footprint=3)}),
    "bench_soft": (_case_bench_like, {"splat": SplatSettings(mode="soft")}),
}


def _load_reference_renderer() -> Any:
    """``reference_renderer.py`` beside this file (importlib mode puts no test folder on sys.path)."""
    spec = importlib.util.spec_from_file_location(
        "anchor_reference_renderer", Path(__file__).with_name("reference_renderer.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference_render = _load_reference_renderer().reference_render


def _flat(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A case's ``SplatSettings``/``MaskSettings``/``FusionSettings`` as the reference's flat arguments."""
    flat: dict[str, Any] = {}
    if (s := kwargs.get("splat")) is not None:
        flat.update(mode=s.mode, footprint=s.footprint, soft_beta=s.soft_beta)
    if (m := kwargs.get("mask")) is not None:
        flat.update(mask_erode=m.erode, mask_dilate=m.dilate)
    if (f := kwargs.get("fusion")) is not None:
        flat.update(fuse_neighbors=f.neighbors)
    return flat


@functools.cache
def _reference(name: str) -> Any:
    """The 75345d5 renderer's ``(frames, mask, depth)`` for case ``name``, on fresh inputs."""
    make, kwargs = CASES[name]
    return reference_render(**make(), **_flat(kwargs))


def _assert_equals_reference(name: str, out: Any, how: str = "") -> None:
    ref = _reference(name)
    for field in ("frames", "mask", "depth"):
        got, want = getattr(out, field), getattr(ref, field)
        assert got.dtype == want.dtype and torch.equal(got, want), (
            f"render_anchor {field} differs from the 75345d5 reference renderer for {name}{how}"
        )


def _render(name: str) -> Any:
    make, kwargs = CASES[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = render_anchor(**make(), **kwargs)
    if "one_frame_behind" in name:  # the empty frame is still reported
        assert out.info["empty_frames"] == [1] and any("anchor frames [1]" in str(w.message) for w in caught)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_bitwise_equal_to_reference(name: str) -> None:
    out = _render(name)
    assert float(out.coverage.mean()) > 0.15  # a meaningful scene, not an empty render
    _assert_equals_reference(name, out)


@pytest.mark.parametrize(
    "name", ["hard_fp1", "hard_fp3_ties", "hard_zoom", "soft", "soft_zoom_beta", "bench_soft"]
)
def test_outputs_with_gradients_enabled_are_the_same(name: str) -> None:
    # inputs requiring grad take the autograd-friendly code paths (no out= buffers, kornia's guard)
    make, kwargs = CASES[name]
    scene = make()
    scene["frames"].requires_grad_()
    scene["depth"].requires_grad_()
    scene["c2w"].requires_grad_()
    out = render_anchor(**scene, **kwargs)
    _assert_equals_reference(name, out, " (inputs requiring grad)")
    if kwargs.get("splat", SplatSettings()).mode == "soft":
        grads = torch.autograd.grad(out.frames.sum() + out.depth.sum(), (scene["depth"], scene["c2w"]))
        assert all(bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0 for g in grads)


def test_outputs_do_not_depend_on_the_thread_count() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = {n: _render(n) for n in ("hard_fp3_ties", "soft")}
    finally:
        torch.set_num_threads(threads)
    for n, out in two.items():
        _assert_equals_reference(n, out, " (2 threads)")


# ------------------------------------------------------------ independent naive z-buffer
def naive_zbuffer(points: torch.Tensor, colors: torch.Tensor, K: torch.Tensor, h: int, w: int, near: float):
    """Nearest point per pixel by two plain passes: minimum depth, then the lowest index at that depth.

    Returns ``(image (C, H, W), depth (1, H, W), mask (1, H, W))``.
    """
    z = points[:, 2]
    uv = project_points(points[None], K[None])[0]
    u = torch.floor(uv[:, 0] + 0.5).long()
    v = torch.floor(uv[:, 1] + 0.5).long()
    ok = (z > near) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix, zs, idx = (v * w + u)[ok], z[ok], ok.nonzero().flatten()
    zmin = torch.full((h * w,), math.inf, dtype=z.dtype).scatter_reduce(0, pix, zs, "amin")
    at_min = zs == zmin[pix]
    first = torch.full((h * w,), points.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, pix[at_min], idx[at_min], "amin")
    hit = first < points.shape[0]
    winner = first.clamp(max=points.shape[0] - 1)
    image = colors[winner].T * hit
    depth = z[winner] * hit
    return image.reshape(-1, h, w), depth.view(1, h, w), hit.to(z.dtype).view(1, h, w)


NAIVE_SCENES: dict[str, Callable[[], dict[str, Any]]] = {
    "random": lambda: _scene(11, 3, 30, 44),
    "integer_depths": lambda: _scene(11, 3, 30, 44, ties=True),
    "float64": lambda: _scene(12, 3, 30, 44, dtype=torch.float64),
    "float64_integer_depths": lambda: _scene(12, 3, 30, 44, ties=True, dtype=torch.float64),
    "dolly_out_exact_ties": _case_dolly_out_ties,  # many points per pixel at exactly equal depth
    "partly_behind": _case_partly_behind,
    "zoom": _case_zoom,
}


@pytest.mark.parametrize("name", list(NAIVE_SCENES))
def test_hard_footprint1_equals_naive_zbuffer(name: str) -> None:
    s = NAIVE_SCENES[name]()
    out = render_anchor(**s)
    t_len, _, h, w = s["frames"].shape
    w2c = invert_rigid(s["c2w"])
    k_target = s.get("K_target", s["K"].expand(t_len, 3, 3))
    ties = 0
    for t in range(t_len):
        pts = transform(w2c[t], depth_to_points(s["depth"][t], s["K"]))
        col = s["frames"][t].reshape(3, -1).T
        near = NEAR_FRACTION * float(s["depth"][t].amax())
        image, depth, mask = naive_zbuffer(pts, col, k_target[t], h, w, near)
        assert torch.equal(out.frames[t], image)
        assert torch.equal(out.depth[t], depth)
        assert torch.equal(out.mask[t], mask)
        ties += _exact_ties(pts, k_target[t], h, w, near)
    assert float(out.mask.mean()) > 0.15
    if name == "dolly_out_exact_ties":
        assert ties > 100  # the tie-breaking rule is really exercised


def _exact_ties(points: torch.Tensor, K: torch.Tensor, h: int, w: int, near: float) -> int:
    """Pixels whose nearest depth is shared by more than one point."""
    z = points[:, 2]
    uv = project_points(points[None], K[None])[0]
    u, v = torch.floor(uv[:, 0] + 0.5).long(), torch.floor(uv[:, 1] + 0.5).long()
    ok = (z > near) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix, zs = (v * w + u)[ok], z[ok]
    zmin = torch.full((h * w,), math.inf, dtype=z.dtype).scatter_reduce(0, pix, zs, "amin")
    count = torch.zeros(h * w).index_add(0, pix[zs == zmin[pix]], torch.ones(int((zs == zmin[pix]).sum())))
    return int((count > 1).sum())


def test_points_within_kornias_divide_guard_project_like_kornia() -> None:
    # |z| <= 1e-8: kornia skips the divide (u = fx x + cx); reachable only with a tiny near
    pts = torch.tensor([[0.4, 0.2, 5e-9], [0.1, 0.3, 2e-9], [0.0, 0.0, 2.0]])
    col = torch.tensor([[0.5], [0.6], [0.7]])
    K = torch.tensor([[2.0, 0, 1.0], [0, 2.0, 1.0], [0, 0, 1]])
    for near in (1e-10, 1e-6):
        image, depth, mask = splat_hard(pts, col, K, (3, 3), near=near)
        ref = naive_zbuffer(pts, col, K, 3, 3, near)
        assert torch.equal(image, ref[0]) and torch.equal(depth, ref[1]) and torch.equal(mask, ref[2])
    assert int(mask.sum()) == 1 and int(ref[2].sum()) == 1
    assert int(splat_hard(pts, col, K, (3, 3), near=1e-10)[2].sum()) == 3


# ------------------------------------------------------------ batching and chunking
@pytest.mark.parametrize("points_per_chunk", [1, 2 * 24 * 40])
@pytest.mark.parametrize(
    "name", ["hard_fp1_ties", "hard_fp3_ties", "soft", "soft_zoom_beta", "bench_hard_fp3"]
)
def test_outputs_do_not_depend_on_the_chunk_size(
    name: str, points_per_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1: one frame per batch of tensor ops (soft: 4 contributions per point count too)
    monkeypatch.setattr(splat_module, "CHUNK_POINTS", points_per_chunk)
    out = _render(name)
    _assert_equals_reference(name, out, f" (CHUNK_POINTS={points_per_chunk})")


@pytest.mark.parametrize("threads", [2, 3])
def test_soft_clouds_go_one_per_thread_with_the_same_bits(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # a cloud's 4 N contributions (3840 here) within twice the budget: a chunk holds one cloud per
    # thread (each cloud's row scattered by its own thread), although the budget alone allows one
    sizes: list[int] = []
    chunk = splat_module._soft_chunk

    def spy(pts, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        sizes.append(pts.shape[0])
        return chunk(pts, *args, **kwargs)

    monkeypatch.setattr(splat_module, "CHUNK_POINTS", 2 * 24 * 40)
    monkeypatch.setattr(splat_module, "_soft_chunk", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        out = _render("soft")
    finally:
        torch.set_num_threads(before)
    assert sizes == ([2, 1] if threads == 2 else [3])
    _assert_equals_reference("soft", out, f" ({threads} clouds per chunk)")
    sizes.clear()
    monkeypatch.setattr(splat_module, "CHUNK_POINTS", 24 * 40)  # past twice the budget: one cloud a chunk
    torch.set_num_threads(threads)
    try:
        _render("soft")
    finally:
        torch.set_num_threads(before)
    assert sizes == [1, 1, 1]


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_batched_splat_equals_one_cloud_at_a_time(mode: str) -> None:
    g = torch.Generator().manual_seed(5)
    pts = torch.rand(3, 200, 3, generator=g) * torch.tensor([2.0, 2.0, 3.0]) - torch.tensor([1.0, 1.0, 0.5])
    col = torch.rand(3, 200, 2, generator=g)
    K = torch.stack([_intrinsics(f, 12, 16) for f in (8.0, 9.0, 10.0)])
    nears = [1e-3, 0.2, 0.6]
    fn = splat_hard if mode == "hard" else splat_soft
    batch = fn(pts, col, K, (12, 16), near=nears)
    for t in range(3):
        one = fn(pts[t], col[t], K[t], (12, 16), near=nears[t])
        for a, b in zip(batch, one, strict=True):
            assert torch.equal(a[t], b)
    assert batch[0].shape == (3, 2, 12, 16) and batch[2].shape == (3, 1, 12, 16)


def test_soft_integer_max_shift_equals_the_float_one() -> None:
    g = torch.Generator().manual_seed(2)
    log_b = torch.log(torch.rand(2, 4, 500, generator=g).clamp_min(1e-4))
    zz = torch.rand(2, 500, generator=g) * 30
    pix = torch.randint(0, 64, (2, 2000), generator=g)
    fast = splat_module._softmax_weights(log_b, zz, pix, 64, nonneg=True)
    plain = splat_module._softmax_weights(log_b, zz, pix, 64, nonneg=False)
    assert torch.equal(fast, plain)
    assert float(fast.max()) == 1.0 and float(fast.min()) < 1e-6


@pytest.mark.parametrize("beta", [5.0, -3.0])
def test_batched_soft_splat_gradcheck(beta: float) -> None:
    g = torch.Generator().manual_seed(4)
    dt = torch.float64
    pts = torch.rand(2, 12, 3, generator=g, dtype=dt) * torch.tensor([1.0, 1.0, 1.0], dtype=dt)
    pts = (pts + torch.tensor([-0.5, -0.5, 1.5], dtype=dt)).requires_grad_()
    col = torch.rand(2, 12, 3, generator=g, dtype=dt, requires_grad=True)
    K = torch.stack([_intrinsics(f, 5, 6, dt) for f in (6.0, 7.0)]).requires_grad_()

    def fn(pts: torch.Tensor, col: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, depth, _ = splat_soft(pts, col, K, (5, 6), beta=beta, min_weight=0.2)
        return image, depth

    assert torch.autograd.gradcheck(fn, (pts, col, K), eps=1e-6, atol=1e-5)


def test_splat_rejects_mismatched_shapes() -> None:
    pts, col, K = torch.rand(10, 3), torch.rand(10, 3), torch.eye(3)
    with pytest.raises(RecaptureError, match=r"points must be \(N, 3\) or \(B, N, 3\), got \(10, 2\)"):
        splat_hard(pts[:, :2], col, K, (4, 4))
    with pytest.raises(RecaptureError, match=r"colors must be .* got \(9, 3\)"):
        splat_soft(pts, col[:9], K, (4, 4))
    with pytest.raises(RecaptureError, match=r"K must be \(3, 3\) or \(2, 3, 3\)"):
        splat_hard(pts.expand(2, 10, 3), col.expand(2, 10, 3), K.expand(3, 3, 3), (4, 4))
    with pytest.raises(RecaptureError, match="one per cloud"):
        splat_hard(pts.expand(2, 10, 3), col.expand(2, 10, 3), K, (4, 4), near=[0.1, 0.2, 0.3])


def test_naive_zbuffer_breaks_exact_ties_to_the_lowest_index() -> None:
    # three points on the same ray at the same depth, one nearer point elsewhere
    pts = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.5, 0.0, 1.0]])
    col = torch.tensor([[0.1], [0.2], [0.3], [0.4]])
    K = torch.tensor([[2.0, 0, 1.0], [0, 2.0, 1.0], [0, 0, 1]])
    image, depth, mask = naive_zbuffer(pts, col, K, 3, 3, 1e-6)
    assert float(image[0, 1, 1]) == pytest.approx(0.1) and float(image[0, 1, 2]) == pytest.approx(0.4)
    assert int(mask.sum()) == 2
    # and the renderer agrees: the tie goes to point 0 whatever the order of the others
    for perm in ([0, 1, 2, 3], [1, 2, 0, 3], [3, 2, 1, 0]):
        img, _, _ = splat_hard(pts[perm], col[perm], K, (3, 3))
        lowest = min(perm.index(0), perm.index(1), perm.index(2))  # first of the tied points
        assert float(img[0, 1, 1]) == float(col[perm][lowest, 0])
        assert float(img[0, 1, 2]) == pytest.approx(0.4)


def test_corner_bins_in_float_equal_the_int64_ones() -> None:
    # float32 holds every bin exactly below 2^24; beyond that (or in half precision) the bins are int64
    g = torch.Generator().manual_seed(7)
    u0 = torch.floor(torch.rand(2, 300, generator=g) * 40 - 2)
    v0 = torch.floor(torch.rand(2, 300, generator=g) * 30 - 2)
    ok = torch.rand(2, 4, 300, generator=g) > 0.3
    padded = 32 * 42
    trash = splat_module._trash(300, padded, u0.device)
    assert splat_module._bin_dtype(torch.float32, padded) == torch.float32
    assert splat_module._bin_dtype(torch.float32, 2**24) == torch.int64
    assert splat_module._bin_dtype(torch.float16, padded) == torch.int64
    fast = splat_module._corner_bins(u0 + 1, v0 + 1, ok, 42, trash.float())
    exact = splat_module._corner_bins(u0 + 1, v0 + 1, ok, 42, trash)
    assert fast.dtype == exact.dtype == torch.int64 and torch.equal(fast, exact)
    expected = ((v0 + 1).long() * 42 + (u0 + 1).long())[:, None] + torch.tensor([0, 1, 42, 43])[:, None]
    assert torch.equal(exact, torch.where(ok, expected, trash))
