"""Camera controls of the GCD Kubric-4D evaluation: official controls JSON, fallback sampler, trajectories.

Official file (GCD repo, ``eval/list/kubric_valtest_controls_gradual.json``)::

    {"scn02900": {"sample_00": {"spherical_start": [az, el, r], "spherical_end": [az, el, r],
                                "frame_start": 3, "frame_skip": 2, ...}, "sample_01": ...}, ...}

Angles in degrees, radius in metres (spec 1.5). When no file is given, :func:`sample_fallback_controls`
draws controls with GCD's *training* ranges (max90 model), seeded per scene; samples made from them
are labelled ``"fallback-sampler"`` because they are not GCD's evaluation pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from recapture.data.kubric.geometry import DATASET_FPS, INPUT_VIEW, view_spherical
from recapture.utils import RecaptureError

__all__ = [
    "ControlsFile",
    "Mode",
    "SceneControls",
    "controls_for_scene",
    "parse_controls",
    "read_controls",
    "sample_fallback_controls",
    "spherical_trajectories",
]

Mode = Literal["gradual", "direct"]


@dataclass(frozen=True)
class SceneControls:
    """One evaluation pair's controls.

    Attributes:
        spherical_start: ``(azimuth_deg, elevation_deg, radius)`` of the input camera (static).
        spherical_end: ``(azimuth_deg, elevation_deg, radius)`` the target camera ends at.
        frame_start: first dataset frame.
        frame_skip: stride between the clip's frames.
    """

    spherical_start: tuple[float, float, float]
    spherical_end: tuple[float, float, float]
    frame_start: int
    frame_skip: int

    def frame_indices(self, num_frames: int = 14) -> list[int]:
        """Dataset frames of the clip: ``frame_start + frame_skip * [0 .. num_frames-1]``."""
        return [self.frame_start + self.frame_skip * i for i in range(num_frames)]

    def fps(self, scene_fps: float = DATASET_FPS) -> int:
        """Clip frame rate, ``round(scene_fps / frame_skip)`` (24 / 12 / 8 / 6 on Kubric-4D)."""
        return int(round(scene_fps / self.frame_skip))

    def to_dict(self) -> dict[str, Any]:
        """The entry as written in GCD's controls JSON."""
        return {
            "spherical_start": list(self.spherical_start),
            "spherical_end": list(self.spherical_end),
            "frame_start": self.frame_start,
            "frame_skip": self.frame_skip,
        }


ControlsFile = dict[str, dict[str, SceneControls]]
"""Parsed controls: scene id -> sample name (``"sample_00"``, ...) -> :class:`SceneControls`."""


def _triple(value: Any, where: str, key: str) -> tuple[float, float, float]:
    try:
        t = tuple(float(x) for x in value)
    except (TypeError, ValueError) as err:
        raise RecaptureError(
            f"{where}: '{key}' must be [azimuth_deg, elevation_deg, radius], got {value!r}"
        ) from err
    if len(t) != 3 or not all(math.isfinite(x) for x in t):
        raise RecaptureError(
            f"{where}: '{key}' must be 3 finite numbers [azimuth_deg, elevation_deg, radius], got {value!r}"
        )
    if t[2] <= 0 or abs(t[1]) >= 90:
        raise RecaptureError(f"{where}: '{key}'={list(t)} needs radius > 0 and |elevation| < 90 degrees")
    return t  # type: ignore[return-value]


def _entry(entry: Any, where: str) -> SceneControls:
    if not isinstance(entry, dict):
        raise RecaptureError(
            f"{where} must be an object with spherical_start, spherical_end, frame_start, frame_skip"
        )
    for key in ("spherical_start", "spherical_end", "frame_start", "frame_skip"):
        if key not in entry:
            raise RecaptureError(
                f"{where}: field '{key}' is missing; expected spherical_start/spherical_end ([az, el, r]), "
                "frame_start and frame_skip (GCD's controls format)"
            )
    ints = {}
    for key, minimum in (("frame_start", 0), ("frame_skip", 1)):
        value = entry[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != int(value)
            or value < minimum
        ):
            raise RecaptureError(f"{where}: '{key}'={value!r} must be an integer >= {minimum}")
        ints[key] = int(value)
    return SceneControls(
        _triple(entry["spherical_start"], where, "spherical_start"),
        _triple(entry["spherical_end"], where, "spherical_end"),
        ints["frame_start"],
        ints["frame_skip"],
    )


def parse_controls(obj: Any, source: str = "controls") -> ControlsFile:
    """Parse GCD's controls JSON content (see the module docstring).

    Args:
        obj: the loaded JSON object.
        source: name used in error messages (e.g. the file path).

    Returns:
        scene id -> sample name -> :class:`SceneControls`.
    """
    if not isinstance(obj, dict) or not obj:
        raise RecaptureError(f"{source} must be a non-empty JSON object mapping scene ids to samples")
    parsed: ControlsFile = {}
    for scene, samples in obj.items():
        if not isinstance(samples, dict) or not samples:
            raise RecaptureError(
                f"{source}: scene {scene!r} must map sample names ('sample_00', ...) to controls"
            )
        parsed[str(scene)] = {str(k): _entry(v, f"{source}[{scene!r}][{k!r}]") for k, v in samples.items()}
    return parsed


def read_controls(path: str | os.PathLike) -> ControlsFile:
    """Read an official controls JSON file (e.g. ``kubric_valtest_controls_gradual.json``)."""
    path = Path(path)
    if not path.is_file():
        raise RecaptureError(
            f"controls file {path} does not exist; pass GCD's eval/list/kubric_valtest_controls_gradual.json "
            "or leave controls unset to use the (labelled) fallback sampler"
        )
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecaptureError(f"{path} is not valid JSON ({err})") from err
    return parse_controls(obj, str(path))


def controls_for_scene(controls: ControlsFile, scene_id: str, sample: int | str = 0) -> SceneControls:
    """Look up one scene's controls; ``sample`` is an index (``0`` -> ``"sample_00"``) or a name."""
    name = f"sample_{sample:02d}" if isinstance(sample, int) else str(sample)
    if scene_id not in controls:
        known = sorted(controls)
        raise RecaptureError(
            f"scene {scene_id!r} is not in the controls file ({len(known)} scenes, {known[0]}..{known[-1]}); "
            "pass controls=None to use the fallback sampler for it"
        )
    if name not in controls[scene_id]:
        raise RecaptureError(
            f"scene {scene_id!r} has no {name!r} in the controls file; it has {sorted(controls[scene_id])}"
        )
    return controls[scene_id][name]


def _scene_seed(scene_id: str, seed: int) -> np.random.Generator:
    # stable across processes (Python's hash() is salted)
    digest = int.from_bytes(hashlib.sha256(scene_id.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, digest])


def _uniform_within(
    rng: np.random.Generator, value: float, delta: tuple[float, float], bounds: tuple[float, float]
) -> float:
    lo, hi = max(value + delta[0], bounds[0]), min(value + delta[1], bounds[1])
    if lo > hi:
        raise RecaptureError(f"start value {value} with deltas {delta} cannot reach the range {bounds}")
    return float(rng.uniform(lo, hi))


def sample_fallback_controls(
    scene_id: str,
    seed: int = 0,
    num_available_frames: int = 60,
    num_frames: int = 14,
    spherical_start: tuple[float, float, float] | None = None,
    delta_azimuth: tuple[float, float] = (-90.0, 90.0),
    delta_elevation: tuple[float, float] = (-30.0, 30.0),
    delta_radius: tuple[float, float] = (-3.0, 3.0),
    elevation_range: tuple[float, float] = (0.0, 50.0),
    radius_range: tuple[float, float] = (12.0, 18.0),
    max_frame_start: int = 6,
) -> SceneControls:
    """Seeded stand-in for GCD's evaluation controls, drawn with GCD's training ranges (max90).

    NOT GCD's official pairs: results made from these must be labelled ``"fallback-sampler"``.
    ``frame_skip ~ U{1 .. num_available // num_frames}``; ``frame_start ~ U{0 .. min(max_frame_start,
    num_available - (frame_skip (num_frames-1) + 1) - 1)}``; end azimuth = start + U(delta_azimuth);
    end elevation / radius uniform over ``start + delta`` intersected with ``elevation_range`` /
    ``radius_range`` (GCD's sampler). Deterministic in ``(scene_id, seed)``.

    Args:
        scene_id: e.g. ``"scn02900"`` (part of the seed).
        seed: global seed.
        num_available_frames: frames in the scene (60 on Kubric-4D).
        num_frames: clip length (14).
        spherical_start: input camera ``(az, el, r)``; default the input view 4 (15, 5, 15).
        delta_azimuth: end azimuth offset range (degrees).
        delta_elevation: end elevation offset range (degrees).
        delta_radius: end radius offset range (metres).
        elevation_range: allowed end elevations.
        radius_range: allowed end radii.
        max_frame_start: GCD's cap on the first frame (6).

    Returns:
        :class:`SceneControls`.
    """
    if num_available_frames < num_frames:
        raise RecaptureError(
            f"the scene has {num_available_frames} frames but a clip needs num_frames={num_frames}; "
            "write longer scenes (Kubric-4D has 60)"
        )
    rng = _scene_seed(scene_id, seed)
    start = (
        view_spherical(INPUT_VIEW) if spherical_start is None else tuple(float(x) for x in spherical_start)
    )
    max_skip = num_available_frames // num_frames
    frame_skip = int(rng.integers(1, max_skip + 1))
    cover = frame_skip * (num_frames - 1) + 1
    last_start = max(min(num_available_frames - cover - 1, max_frame_start), 0)
    frame_start = int(rng.integers(0, last_start + 1))
    end = (
        float(start[0] + rng.uniform(*delta_azimuth)),
        _uniform_within(rng, start[1], delta_elevation, elevation_range),
        _uniform_within(rng, start[2], delta_radius, radius_range),
    )
    return SceneControls(tuple(start), end, frame_start, frame_skip)  # type: ignore[arg-type]


def spherical_trajectories(
    controls: SceneControls, mode: Mode = "gradual", num_frames: int = 14
) -> tuple[Tensor, Tensor]:
    """Per-frame ``(azimuth_deg, elevation_deg, radius)`` of the source and target cameras.

    Source: static at ``spherical_start``. Target, ``gradual``: linear in (az, el, r) from the start
    at frame 0 to the end at the last frame (GCD's ``interpol_linear`` with ``move_time = T - 1``);
    ``direct``: the end pose at every frame. Azimuths are interpolated as given (no wrapping).

    Returns:
        ``source`` and ``target``, each ``(T, 3)`` float64.
    """
    start = torch.tensor(controls.spherical_start, dtype=torch.float64)
    end = torch.tensor(controls.spherical_end, dtype=torch.float64)
    source = start.expand(num_frames, 3).clone()
    if mode == "gradual":
        alpha = torch.arange(num_frames, dtype=torch.float64) / max(num_frames - 1, 1)
        target = start[None] * (1 - alpha[:, None]) + end[None] * alpha[:, None]
    elif mode == "direct":
        target = end.expand(num_frames, 3).clone()
    else:
        raise RecaptureError(f"mode={mode!r} is unknown; use 'gradual' or 'direct'")
    return source, target
