"""Depth backends (prior, file, transformers with a tiny random Depth Anything), mapping, alignment."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from recapture.depth import (
    DisparityMapping,
    FileDepthSource,
    GroundPlanePrior,
    PriorDepthSource,
    TensorDepth,
    TransformersDepthSource,
    align_depth_scales,
    check_depth,
    disparity_to_depth,
    distance_to_depth,
    load_depth_array,
    scene_scale,
)
from recapture.utils import RecaptureError

T, H, W = 3, 30, 40  # deliberately not multiples of 14


def _K(h: int = H, w: int = W, f: float = 35.0) -> torch.Tensor:
    return torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])


# ---------------------------------------------------------------- prior
def test_prior_is_a_labelled_ground_plane_ramp() -> None:
    est = PriorDepthSource().build()
    assert isinstance(est, GroundPlanePrior) and est.is_prior and "prior" in est.name
    depth = est(torch.rand(T, 3, H, W))
    assert depth.shape == (T, 1, H, W)
    check_depth(depth)
    col = depth[0, 0, :, 0]
    assert float(col[0]) == pytest.approx(3.0) and float(col[-1]) == pytest.approx(1.0)
    assert bool((col[1:] <= col[:-1]).all())  # far at the top, near at the bottom
    # below the horizon it is a ground plane: z * (v - v_h) is constant
    v_h = 0.4 * (H - 1)
    rows = torch.arange(H, dtype=torch.float32)
    ground = (col < 3.0) & (rows > v_h)
    prod = col[ground] * (rows[ground] - v_h)
    torch.testing.assert_close(prod, torch.full_like(prod, 1.0 * (H - 1 - v_h)))
    assert torch.equal(depth[0], depth[-1]) and bool((depth[0] == depth[0, :, :, :1]).all())


# ---------------------------------------------------------------- mapping and alignment
def test_near_far_mapping_inverts_affine_disparity_exactly() -> None:
    z = torch.rand(T, 1, H, W) * 9 + 1  # true depth in [1, 10]
    z[0, 0, 0, 0], z[0, 0, 0, 1] = 1.0, 10.0
    disparity = 3.7 / z - 0.2  # what a relative model predicts: affine in 1 / z
    mapping = DisparityMapping(near=1.0, far=10.0, low_percentile=0.0, high_percentile=100.0)
    torch.testing.assert_close(disparity_to_depth(disparity, mapping), z, rtol=1e-5, atol=1e-5)
    # default percentiles clip outliers into [near, far]
    out = disparity_to_depth(disparity * 1e3, DisparityMapping())
    assert float(out.min()) >= 1.0 - 1e-6 and float(out.max()) <= 10.0 + 1e-5
    torch.testing.assert_close(disparity_to_depth(1 / z, DisparityMapping(mode="inverse")), z)
    with pytest.raises(RecaptureError, match="near < far"):
        DisparityMapping(near=2.0, far=1.0)


@pytest.mark.parametrize("method", ["stats", "lstsq"])
def test_alignment_removes_per_frame_scale_and_shift(method: str) -> None:
    ref = torch.rand(1, 1, H, W) * 4 + 1
    disp = 1 / ref
    scales, shifts = [1.0, 1.7, 0.6, 2.3], [0.0, -0.05, 0.1, 0.02]
    depth = torch.cat([1 / (s * disp + b) for s, b in zip(scales, shifts, strict=True)])
    aligned = align_depth_scales(depth, method=method)
    torch.testing.assert_close(aligned, ref.expand_as(depth), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(depth, ref.expand_as(depth), rtol=1e-2)


def test_scene_scale_is_median_of_first_frame() -> None:
    depth = torch.ones(2, 1, 4, 4)
    depth[0] = torch.arange(1, 17, dtype=torch.float32).view(1, 4, 4)
    depth[1] = 100
    assert scene_scale(depth) == float(depth[0].median())


@pytest.mark.parametrize("bad", [math.nan, -math.inf, 0.0, -2.0])
def test_check_depth_names_bad_frames(bad: float) -> None:
    depth = torch.ones(4, 1, 5, 5)
    depth[2, 0, 1, 1] = bad
    with pytest.raises(RecaptureError, match=r"1 of 4 frames \(frame 2\)"):
        check_depth(depth)
    with pytest.raises(RecaptureError, match=r"depth \(4, 1, 5, 5\) does not match frames \(3, 3, 5, 5\)"):
        check_depth(torch.ones(4, 1, 5, 5), torch.rand(3, 3, 5, 5))


# ---------------------------------------------------------------- file backend
def _planar(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((t, h, w)) * 4 + 1).astype(np.float32)


def test_file_backend_depth_units_and_npz_keys(tmp_path: Path) -> None:
    z = _planar()
    frames = torch.rand(T, 3, H, W)
    np.save(tmp_path / "mm.npy", z * 1000)
    est = FileDepthSource(path=str(tmp_path / "mm.npy"), units=0.001).build()
    assert not est.is_prior and est.name == "file:mm.npy"
    torch.testing.assert_close(est(frames), torch.from_numpy(z)[:, None], rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "named.npz", depth=z, other=z)
    np.savez(tmp_path / "single.npz", arr=z)
    for name in ("named.npz", "single.npz"):
        out = FileDepthSource(path=str(tmp_path / name)).build()(frames)
        torch.testing.assert_close(out, torch.from_numpy(z)[:, None])
    np.savez(tmp_path / "ambiguous.npz", a=z, b=z)
    with pytest.raises(RecaptureError, match="name the depth array 'depth'"):
        FileDepthSource(path=str(tmp_path / "ambiguous.npz")).build()(frames)


def test_file_backend_distance_is_converted_to_planar(tmp_path: Path) -> None:
    z = torch.from_numpy(_planar())[:, None]
    K = _K()
    v, u = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    ray = torch.sqrt(1 + ((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2)
    np.save(tmp_path / "dist.npy", (z * ray).numpy()[:, 0])
    cfg = FileDepthSource(path=str(tmp_path / "dist.npy"), kind="distance")
    fov = math.degrees(2 * math.atan(W / 2 / 35.0))  # gives fx = 35 for width 40
    out = cfg.build(fov_deg=fov)(torch.rand(T, 3, H, W))
    torch.testing.assert_close(out, z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(distance_to_depth(z * ray, K), z)
    with pytest.raises(RecaptureError, match="needs the camera intrinsics"):
        cfg.build()


def test_file_backend_disparity_and_resize(tmp_path: Path) -> None:
    # per-frame disparity 0.5, 0.25, 0.125 plus a gentle ramp along x (bilinear-exact inside)
    ramp = np.linspace(0.0, 0.019, 20, dtype=np.float32)
    disp = np.stack([np.broadcast_to(c + ramp, (15, 20)) for c in (0.5, 0.25, 0.125)])
    np.save(tmp_path / "disp.npy", disp)
    cfg = FileDepthSource(
        path=str(tmp_path / "disp.npy"),
        kind="disparity",
        disparity_mapping=DisparityMapping(mode="inverse"),
        align=False,
    )
    out = cfg.build()(torch.rand(T, 3, H, W))  # resized 15x20 -> 30x40
    assert out.shape == (T, 1, H, W)
    # 2x bilinear (half-pixel centres): output column j samples input x = (j + 0.5) / 2 - 0.5
    x = (torch.arange(2, W - 2) + 0.5) / 2 - 0.5
    expect = torch.tensor([0.5, 0.25, 0.125])[:, None] + 0.001 * x[None]
    torch.testing.assert_close(1 / out[:, 0, 5, 2 : W - 2], expect, rtol=1e-5, atol=1e-6)
    # relative disparity: mapped into [near, far]
    rel = FileDepthSource(path=str(tmp_path / "disp.npy"), kind="disparity", align=False)
    d = rel.build()(torch.rand(T, 3, H, W))
    check_depth(d)
    assert float(d.min()) >= 1.0 - 1e-5 and float(d.max()) <= 10.0 + 1e-4
    assert float(d[0].mean()) < float(d[2].mean())  # larger disparity is nearer
    # alignment (default for disparity files) brings every frame to frame 0's statistics
    rel.align = None
    aligned = rel.build()(torch.rand(T, 3, H, W))
    medians = (1 / aligned).flatten(1).median(1).values
    torch.testing.assert_close(medians, medians[:1].expand(T), rtol=1e-4, atol=1e-5)


def test_file_backend_errors_name_frames_and_counts(tmp_path: Path) -> None:
    z = _planar()
    np.save(tmp_path / "d.npy", z)
    est = FileDepthSource(path=str(tmp_path / "d.npy")).build()
    with pytest.raises(RecaptureError, match="has 3 frames but the video has 5"):
        est(torch.rand(5, 3, H, W))
    z[1, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", z)
    with pytest.raises(RecaptureError, match=r"NaN/inf values in frames \[1\]"):
        FileDepthSource(path=str(tmp_path / "nan.npy")).build()(
            torch.rand(T, 3, H, W)
        )
    z[1, 2, 2] = -1
    np.save(tmp_path / "neg.npy", z)
    with pytest.raises(RecaptureError, match=r"non-positive values in 1 of 3 frames \(frame 1\)"):
        FileDepthSource(path=str(tmp_path / "neg.npy")).build()(
            torch.rand(T, 3, H, W)
        )
    with pytest.raises(RecaptureError, match="does not exist"):
        FileDepthSource(path=str(tmp_path / "missing.npy")).build()(
            torch.rand(T, 3, H, W)
        )


class _Payload:
    """Unpickling this creates a folder: proof that a loader executed code from the file."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.target,))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_file_backend_refuses_pickled_arrays_without_running_them(tmp_path: Path, suffix: str) -> None:
    live = np.array([_Payload(tmp_path / "ran_live")], dtype=object)
    np.save(tmp_path / "probe.npy", live, allow_pickle=True)
    np.load(tmp_path / "probe.npy", allow_pickle=True)  # the payload is live: unpickling runs it
    assert (tmp_path / "ran_live").is_dir()
    evil = np.array([_Payload(tmp_path / "ran")], dtype=object)
    path = tmp_path / f"evil{suffix}"
    if suffix == ".npy":
        np.save(path, evil, allow_pickle=True)
    else:
        np.savez(path, depth=evil)
    est = FileDepthSource(path=str(path)).build()
    with pytest.raises(RecaptureError) as err:
        est(torch.rand(1, 3, H, W))
    assert f"depth file {path}" in str(err.value) and "pickled object array" in str(err.value)
    assert "np.save" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "ran").exists()


def _truncated_npz(path: Path) -> None:
    np.savez(path, depth=_planar())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_npy(path: Path) -> None:
    np.save(path, _planar())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


@pytest.mark.parametrize(
    ("name", "write", "needle"),
    [
        ("cut.npy", _truncated_npy, f"truncated: its header promises shape ({T}, {H}, {W}) float32"),
        ("cut.npz", _truncated_npz, "damaged or truncated .npz archive"),
        ("text.npy", lambda p: p.write_text("0.5 0.7\n0.1 0.2\n"), "is not NumPy .npy/.npz data (it starts with b'0.5"),
        ("text.npz", lambda p: p.write_text("depth,frame\n"), "is not NumPy .npy/.npz data (it starts with b'depth"),
        ("empty.npy", lambda p: p.write_bytes(b""), "(it is empty)"),
        ("lfs.npy", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"),
         "git lfs pull"),
        ("words.npy", lambda p: np.save(p, np.full((T, H, W), "x")), "holds dtype <U1, not numbers"),
        ("words.npz", lambda p: np.savez(p, depth=np.full((T, H, W), "x")), "(array 'depth') holds dtype <U1"),
    ],
)
def test_file_backend_names_broken_files(tmp_path: Path, name: str, write, needle: str) -> None:
    path = tmp_path / name
    write(path)
    est = FileDepthSource(path=str(path)).build()
    with pytest.raises(RecaptureError) as err:
        est(torch.rand(T, 3, H, W))
    message = str(err.value)
    assert message.startswith(f"depth file {path}") and needle in message, message
    assert ("re-export it with np.save" in message or "lfs" in name) and "\n" not in message


def test_file_backend_reads_fortran_compressed_and_big_endian_arrays(tmp_path: Path) -> None:
    z = _planar()
    np.save(tmp_path / "f.npy", np.asfortranarray(z))
    np.savez_compressed(tmp_path / "c.npz", depth=z.astype(">f8"))
    np.save(tmp_path / "i.npy", (z * 1000).astype(np.uint16))
    for name, scale in (("f.npy", 1.0), ("c.npz", 1.0), ("i.npy", 1000.0)):
        arr = load_depth_array(tmp_path / name)
        assert arr.shape == (T, H, W) and arr.flags.writeable
        np.testing.assert_allclose(arr / scale, z, atol=1e-3)


def test_tensor_depth_checks_its_frames() -> None:
    depth = torch.rand(T, 1, H, W) + 1
    est = TensorDepth(depth, name="exact:test")
    assert torch.equal(est(torch.rand(T, 3, H, W)), depth)
    with pytest.raises(RecaptureError, match="does not match frames"):
        est(torch.rand(T + 1, 3, H, W))


# ---------------------------------------------------------------- transformers backend
@pytest.fixture(scope="module")
def tiny_depth_anything(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Depth Anything, built from config and saved like a hub checkpoint."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=28,
        patch_size=14,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=16,
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8,
        head_hidden_size=4,
        patch_size=14,
    )
    model = DepthAnythingForDepthEstimation(config).eval()
    # a random head outputs ~0 everywhere (ReLU); give it a spread so the mapping is exercised
    torch.nn.init.constant_(model.head.conv3.bias, 1.0)
    path = tmp_path_factory.mktemp("tiny-depth-anything")
    model.save_pretrained(path)
    return path


def test_transformers_backend_tiny_depth_anything(tiny_depth_anything: Path) -> None:
    from transformers import AutoModelForDepthEstimation

    from recapture.depth.transformers_backend import IMAGENET_MEAN, IMAGENET_STD

    cfg = TransformersDepthSource(
        model=str(tiny_depth_anything),
        input_size=28,
        batch_size=2,
        progress=False,
        align=False,
    )
    est = cfg.build()
    frames = torch.rand(T, 3, H, W)
    depth = est(frames)
    assert est.name == f"transformers:{tiny_depth_anything}" and not est.is_prior and not est.metric
    assert depth.shape == (T, 1, H, W) and depth.dtype == torch.float32
    check_depth(depth)
    assert est.model_input_size(H, W) == (28, 42)  # short side 28, long side rounded to 14 * k
    # parity with the model called by hand on the same preprocessing
    model = AutoModelForDepthEstimation.from_pretrained(str(tiny_depth_anything)).eval()
    x = torch.nn.functional.interpolate(frames, size=(28, 42), mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        disp = model(pixel_values=x).predicted_depth[:, None]
    disp = torch.nn.functional.interpolate(disp, size=(H, W), mode="bilinear")
    torch.testing.assert_close(depth, disparity_to_depth(disp, cfg.disparity_mapping), rtol=1e-4, atol=1e-4)
    # batching does not change the result; alignment (on by default for relative models) keeps it valid
    one = replace(cfg, batch_size=1).build()(frames)
    torch.testing.assert_close(one, depth, rtol=1e-4, atol=1e-4)
    check_depth(replace(cfg, align=None).build()(frames))


def test_transformers_backend_metric_detection_and_missing_model(
    tiny_depth_anything: Path, tmp_path: Path
) -> None:
    from transformers import DepthAnythingConfig

    from recapture.depth.transformers_backend import is_metric_model

    assert is_metric_model(DepthAnythingConfig(depth_estimation_type="metric"))
    assert not is_metric_model(DepthAnythingConfig())
    cfg = TransformersDepthSource(model=str(tiny_depth_anything), input_size=28, progress=False, metric=True)
    est = cfg.build()
    assert est.metric
    depth = est(torch.rand(2, 3, H, W))  # the random head outputs >= 1 (bias): valid metric depth
    check_depth(depth)
    missing = TransformersDepthSource(model=str(tmp_path / "nope")).build()
    with pytest.raises(RecaptureError, match="--data.depth PriorDepthSource"):
        missing(torch.rand(1, 3, H, W))
