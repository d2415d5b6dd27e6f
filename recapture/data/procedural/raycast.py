"""The one ray caster: exact nearest hits, Lambertian shading with hard shadows, pinhole cameras.

Rays are ``o + t d`` batched per frame: origins ``(F, 3)``, directions ``(F, N, 3)`` (any length).
Camera rays are built with camera-frame z = 1 (``d = R [x, y, 1]``), so the hit parameter ``t`` *is*
the planar depth and ``t |d|`` the Euclidean distance. Everything is vectorised over frames and rays;
Python loops only run over the scene's few surfaces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from recapture.data.procedural.scene import Primitive, Scene
from recapture.utils import RecaptureError

__all__ = ["Hits", "camera_rays", "intersect", "render", "shade"]

_EPS = 1e-6
MISS, DOME = -1, 0  # surface codes; planes are 1..P, objects P+1..P+K


@dataclass
class Hits:
    """Nearest hits of ``(F, N)`` rays: parameter ``t`` (inf on a miss), surface code, box face axis."""

    t: Tensor
    surface: Tensor
    face: Tensor


def _sphere_entry(
    o: Tensor, d: Tensor, dd: Tensor, centres: Tensor, radius: float, far: bool = False
) -> Tensor:
    """Parameter ``(F, N)`` where rays enter (``far``: leave) spheres at ``centres`` ``(F, 3)``; inf on a miss."""
    oc = o - centres  # (F, 3)
    b = torch.einsum("fnk,fk->fn", d, oc)
    c = (oc * oc).sum(-1, keepdim=True) - radius * radius
    disc = b * b - dd * c
    root = disc.clamp_min(0).sqrt()
    t = ((root if far else -root) - b) / dd
    return torch.where((disc > 0) & (t > _EPS), t, torch.full_like(t, math.inf))


def _box_entry(o: Tensor, d: Tensor, centres: Tensor, rots: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
    """Slab test in each frame's box frame: entry ``t`` ``(F, N)`` (inf on a miss) and entry axis ``(F, N)``."""
    o_l = (o - centres)[:, None, :] @ rots  # (F, 1, 3): rot^T (o - c)
    d_l = torch.einsum("fnk,fkj->fnj", d, rots)  # (F, N, 3): rot^T d
    d_l = torch.where(d_l.abs() < 1e-12, torch.full_like(d_l, 1e-12), d_l)
    t1, t2 = (-half - o_l) / d_l, (half - o_l) / d_l
    t_near, axis = torch.minimum(t1, t2).max(dim=-1)
    t_far = torch.maximum(t1, t2).amin(dim=-1)
    hit = (t_far >= t_near) & (t_near > _EPS)
    return torch.where(hit, t_near, torch.full_like(t_near, math.inf)), axis


def intersect(scene: Scene, frames: Tensor, o: Tensor, d: Tensor) -> Hits:
    """Nearest surface along rays ``o + t d`` at scene frames ``frames``.

    Args:
        scene: the scene.
        frames: ``(F,)`` int64 frame indices.
        o: ``(F, 3)`` ray origins (one per frame).
        d: ``(F, N, 3)`` ray directions (not necessarily unit); their dtype is the compute dtype.

    Returns:
        :class:`Hits` of shape ``(F, N)``: ``t`` along ``d``, surface code (-1 miss, 0 dome,
        ``1 + i`` plane ``i``, ``1 + P + k`` object ``k``) and box entry axis.
    """
    dt = d.dtype
    o = o.to(dt)
    t = torch.full(d.shape[:2], math.inf, dtype=dt)
    surface = torch.full(d.shape[:2], MISS, dtype=torch.int64)
    face = torch.zeros_like(surface)
    dd = (d * d).sum(-1)

    def take(t_new: Tensor, code: int, axis: Tensor | None = None) -> None:
        nonlocal t, surface, face
        closer = t_new < t
        t = torch.where(closer, t_new, t)
        surface = torch.where(closer, torch.full_like(surface, code), surface)
        if axis is not None:
            face = torch.where(closer, axis, face)

    if scene.dome is not None:
        centre = scene.dome.centre.to(dt).expand_as(o)
        take(_sphere_entry(o, d, dd, centre, float(scene.dome.radius), far=True), DOME)
    for i, plane in enumerate(scene.planes):
        n = plane.normal.to(dt)
        denom = d @ n
        num = (plane.origin.to(dt) - o) @ n  # (F,)
        ok = denom.abs() > 1e-12
        t_p = num[:, None] * torch.where(ok, denom, torch.ones_like(denom)).reciprocal()
        ok &= t_p > _EPS
        if plane.bounds is not None:
            rel = o[:, None, :] + t_p[..., None] * d - plane.origin.to(dt)
            u, v = rel @ plane.u_axis.to(dt), rel @ plane.v_axis.to(dt)
            u0, u1, v0, v1 = plane.bounds
            ok &= (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
        take(torch.where(ok, t_p, torch.full_like(t_p, math.inf)), 1 + i)
    base = 1 + len(scene.planes)
    for k, obj in enumerate(scene.objects):
        centres = obj.centres[frames].to(dt)
        if obj.kind == "sphere":
            take(_sphere_entry(o, d, dd, centres, float(obj.size[0])), base + k)
        else:
            t_box, axis = _box_entry(o, d, centres, obj.rotations[frames].to(dt), obj.size.to(dt))
            take(t_box, base + k, axis)
    return Hits(t, surface, face)


def _surface_points(obj: Primitive, frame: Tensor, p: Tensor, face: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Texture coordinates ``(M, 2)``, world normals ``(M, 3)`` and face axes ``(M,)`` of points on ``obj``."""
    centres = obj.centres.to(p.dtype)[frame]  # (M, 3)
    rots = obj.rotations.to(p.dtype)[frame]  # (M, 3, 3)
    local = torch.einsum("mk,mkj->mj", p - centres, rots)  # object-frame coordinates
    if obj.kind == "sphere":
        n_local = local / float(obj.size[0])
        uv = torch.stack(
            [torch.atan2(n_local[:, 1], n_local[:, 0]), torch.asin(n_local[:, 2].clamp(-1, 1))], -1
        )
        return uv, (p - centres) / float(obj.size[0]), torch.zeros_like(face)
    rows = torch.arange(len(face))
    n_local = torch.zeros_like(local)
    n_local[rows, face] = torch.sign(local[rows, face])
    others = torch.tensor([[1, 2], [0, 2], [0, 1]])[face]  # the two in-face axes, in order
    uv = torch.gather(local, 1, others)
    return uv, torch.einsum("mjk,mk->mj", rots, n_local), face


def _shadowed(scene: Scene, frame: Tensor, p: Tensor, code: Tensor) -> Tensor:
    """Whether the ray from each point ``p`` ``(M, 3)`` towards the light meets a primitive: ``(M,)`` bool.

    A point never shadows itself through its own object (convex: ``n . L < 0`` already darkens it).
    """
    light = scene.light.direction.to(p.dtype)
    out = torch.zeros(p.shape[0], dtype=torch.bool)
    base = 1 + len(scene.planes)
    for k, obj in enumerate(scene.objects):
        pc = p - obj.centres.to(p.dtype)[frame]
        # p + s L (|L| = 1) meets a sphere of radius r at s > 0 iff p is outside it, the centre lies
        # ahead and the ray passes within the radius: b = (p - c) . L < 0 and b^2 > |p - c|^2 - r^2
        b = pc @ light
        c = (pc * pc).sum(-1) - obj.bounding_radius**2
        if obj.kind == "sphere":
            blocked = (c > 0) & (b < 0) & (b * b > c)
        else:  # only rays through the bounding sphere (or starting in it) can meet the box
            near = ((c <= 0) | ((b < 0) & (b * b > c))) & (code != base + k)
            idx = near.nonzero(as_tuple=True)[0]
            rots = obj.rotations.to(p.dtype)[frame[idx]]  # (M', 3, 3)
            p_l = torch.einsum("mk,mkj->mj", pc[idx], rots)  # rot^T (p - c)
            l_l = torch.einsum("k,mkj->mj", light, rots)  # rot^T L
            l_l = torch.where(l_l.abs() < 1e-12, torch.full_like(l_l, 1e-12), l_l)
            half = obj.size.to(p.dtype)
            t1, t2 = (-half - p_l) / l_l, (half - p_l) / l_l
            t_near = torch.minimum(t1, t2).amax(dim=-1)
            t_far = torch.maximum(t1, t2).amin(dim=-1)
            blocked = torch.zeros_like(out)
            blocked[idx] = (t_far >= t_near) & (t_far > _EPS)
        out |= blocked & (code != base + k)
    return out


def shade(scene: Scene, frames: Tensor, o: Tensor, d: Tensor, hits: Hits) -> Tensor:
    """Colour ``(F, N, 3)`` in [0, 1] of the hits of rays ``o + t d`` (see :func:`intersect`).

    Lit surfaces get ``albedo * (ambient + diffuse * max(n . L, 0) * unshadowed)`` with the albedo
    clamped to ``scene.albedo_range``; the dome is emissive; misses get ``scene.miss_colour``.
    """
    dt = d.dtype
    o = o.to(dt)
    num_f, num_n = d.shape[:2]
    # flat indices into the (F * N) rays are much cheaper to gather and scatter than (f, n) pairs
    d, t, surface = d.reshape(-1, 3), hits.t.reshape(-1), hits.surface.reshape(-1)
    rgb = scene.miss_colour.to(dt).expand(num_f * num_n, 3).clone()
    if scene.dome is not None:
        idx = (surface == DOME).nonzero(as_tuple=True)[0]
        if len(idx):
            p = o[idx // num_n] + t[idx, None] * d[idx]
            direction = p - scene.dome.centre.to(dt)
            rgb[idx] = scene.dome.sky.radiance(direction / direction.norm(dim=-1, keepdim=True))
    idx = (surface > DOME).nonzero(as_tuple=True)[0]
    if len(idx):
        ray = d[idx]
        f_idx = idx // num_n
        p = o[f_idx] + t[idx, None] * ray
        code, face = surface[idx], hits.face.reshape(-1)[idx]
        frame = frames[f_idx]
        albedo, normal = torch.empty_like(p), torch.empty_like(p)
        for i, plane in enumerate(scene.planes):
            sel = (code == 1 + i).nonzero(as_tuple=True)[0]
            if len(sel):
                rel = p[sel] - plane.origin.to(dt)
                uv = torch.stack([rel @ plane.u_axis.to(dt), rel @ plane.v_axis.to(dt)], -1)
                albedo[sel] = plane.texture.albedo(uv)
                n = plane.normal.to(dt).expand(len(sel), 3)
                normal[sel] = torch.where((ray[sel] @ plane.normal.to(dt) > 0)[:, None], -n, n)
        base = 1 + len(scene.planes)
        for k, obj in enumerate(scene.objects):
            sel = (code == base + k).nonzero(as_tuple=True)[0]
            if len(sel):
                uv, normal[sel], axis = _surface_points(obj, frame[sel], p[sel], face[sel])
                albedo[sel] = obj.texture.albedo(uv, axis)
        albedo = albedo.clamp(*scene.albedo_range)
        light = scene.light
        lit = (normal @ light.direction.to(dt)).clamp_min(0)
        if light.shadows and scene.objects:
            lit = lit * (~_shadowed(scene, frame, p, code)).to(dt)
        rgb[idx] = albedo * (light.ambient + light.diffuse * lit)[:, None]
    return rgb.clamp(0, 1).reshape(num_f, num_n, 3)


def camera_rays(c2w: Tensor, K: Tensor, size: tuple[int, int], supersample: int = 1) -> tuple[Tensor, Tensor]:
    """Origins ``(F, 3)`` and world directions ``(F, H*s*W*s, 3)`` through ``s x s`` sub-pixel centres.

    Directions have camera-frame z = 1 (so the hit parameter is the planar depth); pixel ``(u, v)``
    has its centre at ``(u + 0.5, v + 0.5)``; rays are row-major over the ``(H*s, W*s)`` grid.
    The dtype is ``c2w``'s.

    Args:
        c2w: ``(F, 4, 4)`` OpenCV camera-to-world poses.
        K: ``(F, 3, 3)`` pixel intrinsics.
        size: ``(H, W)``.
        supersample: sub-pixel rays per side ``s``.
    """
    height, width = size
    dt = c2w.dtype
    K = K.to(dt)
    u = (torch.arange(width * supersample, dtype=dt) + 0.5) / supersample
    v = (torch.arange(height * supersample, dtype=dt) + 0.5) / supersample
    x = (u[None, None, :] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None]
    y = (v[None, :, None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None]
    x, y = torch.broadcast_tensors(x, y)
    cam = torch.stack([x, y, torch.ones_like(x)], dim=-1).reshape(c2w.shape[0], -1, 3)
    return c2w[:, :3, 3], torch.einsum("fnk,fjk->fnj", cam, c2w[:, :3, :3])


def _check_cameras(scene: Scene, frames: Sequence[int], c2w: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    num = len(frames)
    if num == 0 or any(not 0 <= int(f) < scene.num_frames for f in frames):
        raise RecaptureError(f"frames={list(frames)!r} out of range; the scene has {scene.num_frames} frames")
    c2w = torch.as_tensor(c2w)
    K = torch.as_tensor(K)
    if c2w.shape == (4, 4):
        c2w = c2w.expand(num, 4, 4)
    if K.shape == (3, 3):
        K = K.expand(num, 3, 3)
    if tuple(c2w.shape) != (num, 4, 4) or tuple(K.shape) != (num, 3, 3):
        raise RecaptureError(
            f"cameras must be c2w (4, 4) or ({num}, 4, 4) and K (3, 3) or ({num}, 3, 3) for {num} frames, "
            f"got c2w {tuple(c2w.shape)} and K {tuple(K.shape)}"
        )
    return c2w, K


def render(
    scene: Scene,
    frames: Sequence[int],
    c2w: Tensor,
    K: Tensor,
    size: tuple[int, int],
    supersample: int = 1,
    dtype: torch.dtype = torch.float32,
    max_rays: int = 1 << 21,
) -> dict[str, Tensor]:
    """Ray-cast ``scene`` at ``frames[i]`` from camera ``i`` (any number of cameras, moving or not).

    Depth, distance and segmentation come from the ray through each pixel centre, computed in
    ``dtype``, so they are exact up to its rounding. Colour averages ``supersample x supersample``
    sub-pixel rays (a float32 pass of its own when ``supersample > 1``, else the centre ray's).

    Args:
        scene: the scene.
        frames: ``F`` frame indices in ``0..T-1`` (repeats allowed).
        c2w: ``(F, 4, 4)`` (or ``(4, 4)`` for all) OpenCV camera-to-world poses in the scene's world.
        K: ``(F, 3, 3)`` (or ``(3, 3)``) pixel intrinsics; pixel centres at integer + 0.5.
        size: ``(H, W)``.
        supersample: colour sub-pixel rays per side (>= 1).
        dtype: geometry dtype (float64 for ground truth that must survive float32 round trips).
        max_rays: rays traced at once (memory bound); frames are batched accordingly.

    Returns:
        ``rgb`` ``(F, 3, H, W)`` float32 in [0, 1]; ``depth`` ``(F, H, W)`` float32 planar z;
        ``distance`` ``(F, H, W)`` float32 Euclidean distance to the camera centre; ``segmentation``
        ``(F, H, W)`` int64 instance ids (0 = planes, dome and misses).
    """
    if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
        raise RecaptureError(f"supersample={supersample!r} must be an integer >= 1")
    frame_list = [int(f) for f in frames]
    c2w, K = _check_cameras(scene, frame_list, c2w, K)
    height, width = size
    ids = torch.tensor([0, 0] + [0] * len(scene.planes) + [o.instance_id for o in scene.objects])
    per_frame = height * width * (1 + supersample * supersample * (supersample > 1))
    step = max(1, max_rays // per_frame)
    out: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "distance": [], "segmentation": []}
    for i in range(0, len(frame_list), step):
        fr = torch.tensor(frame_list[i : i + step])
        pose, intr = c2w[i : i + step].to(dtype), K[i : i + step].to(dtype)
        o, d = camera_rays(pose, intr, size)
        hits = intersect(scene, fr, o, d)
        if supersample > 1:
            o_f, d_f = camera_rays(pose.float(), intr.float(), size, supersample)
            fine = shade(scene, fr, o_f, d_f, intersect(scene, fr, o_f, d_f))
            fine = fine.reshape(len(fr), height, supersample, width, supersample, 3)
            rgb = fine.mean(dim=(2, 4))
        else:
            rgb = shade(scene, fr, o, d, hits).reshape(len(fr), height, width, 3)
        out["rgb"].append(rgb.permute(0, 3, 1, 2).float())
        out["depth"].append(hits.t.reshape(len(fr), height, width).float())
        out["distance"].append((hits.t * (d * d).sum(-1).sqrt()).reshape(len(fr), height, width).float())
        out["segmentation"].append(ids[hits.surface + 1].reshape(len(fr), height, width))
    return {k: torch.cat(v) for k, v in out.items()}
