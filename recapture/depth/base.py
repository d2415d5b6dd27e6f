"""The depth interface: the ``DepthEstimator`` protocol, the ``DepthSource`` config base, checks, scene scale.

Every backend returns **planar** depth ``(T, 1, H, W)`` (camera-frame ``z``, not the distance along
the ray), strictly positive and finite, in arbitrary but consistent units. The first frame's median
depth defines one *scene unit* (:func:`scene_scale`), which trajectories are expressed in.
"""

from __future__ import annotations

import inspect
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from recapture.utils import RecaptureError, check_video

log = logging.getLogger(__name__)

__all__ = [
    "DepthEstimator",
    "DepthSource",
    "DisparityMapping",
    "check_depth",
    "check_frames",
    "depth_sources",
    "explain_depth_error",
    "migrate_flat_depth",
    "migrate_flat_depth_sections",
    "scene_scale",
]


@runtime_checkable
class DepthEstimator(Protocol):
    """Anything that maps a video to planar depth.

    Attributes:
        name: where the depth comes from, e.g. ``"transformers:depth-anything/Depth-Anything-V2-Small-hf"``,
            ``"file:depth.npz"`` or ``"prior:ground-plane"``; written to logs and reports.
        is_prior: True for the weight-free fallback (no real depth): reports label it as such.

    Optionally, ``cache_token`` (any JSON-able or tensor value) changes whenever the output would
    change (settings, file content); the anchor cache key uses it, falling back to ``name``.
    """

    name: str
    is_prior: bool

    def __call__(self, frames: Tensor) -> Tensor:
        """Estimate depth.

        Args:
            frames: video ``(T, 3, H, W)`` in [0, 1].

        Returns:
            planar depth ``(T, 1, H, W)``, finite and > 0.
        """
        ...


@dataclass
class DisparityMapping:
    """How disparity-like values (relative depth models, disparity files) become planar depth.

    ``mode="near_far"`` (default, for *relative* models such as Depth Anything or DPT, whose output
    is inverse depth up to an unknown scale and shift): disparity is normalised over the whole
    video between its ``low_percentile`` and ``high_percentile`` (robust to outliers, and one
    normalisation for all frames so the mapping itself does not flicker), clipped to [0, 1], and
    then mapped linearly in *inverse depth* between the far plane (normalised 0) and the near plane
    (normalised 1)::

        n = clip((disp - p_low) / (p_high - p_low), 0, 1)
        depth = 1 / (1 / far + n * (1 / near - 1 / far))

    Interpolating inverse depth (not depth) keeps the model's affine-invariant disparity affine,
    i.e. it is the exact answer when the model is right up to scale and shift and the scene spans
    ``[near, far]``. Only the ratio ``far / near`` matters downstream (scene scale normalises the
    rest): it sets how much parallax a camera move produces. 10 suits typical handheld videos
    (subject at ~1-2 m, background at ~10-20 m); raise it for landscapes, lower it for close-ups.

    ``mode="inverse"``: ``depth = 1 / disparity`` (metric inverse depth, e.g. from stereo).

    Attributes:
        mode: ``"near_far"`` or ``"inverse"``.
        near: depth of the nearest content (normalised disparity 1).
        far: depth of the farthest content (normalised disparity 0, sky).
        low_percentile: percentile of disparity mapped to the far plane.
        high_percentile: percentile of disparity mapped to the near plane.
    """

    mode: Literal["near_far", "inverse"] = "near_far"
    near: float = 1.0
    far: float = 10.0
    low_percentile: float = 1.0
    high_percentile: float = 99.0

    def __post_init__(self) -> None:
        if not 0 < self.near < self.far:
            raise RecaptureError(
                f"disparity_mapping needs 0 < near < far, got near={self.near}, far={self.far}; "
                "e.g. near: 1.0, far: 10.0"
            )
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise RecaptureError(
                f"disparity_mapping percentiles must satisfy 0 <= low < high <= 100, got "
                f"low={self.low_percentile}, high={self.high_percentile}"
            )


@dataclass
class DepthSource(ABC):
    """Where depth comes from: the ``data.depth:`` section, one subclass per backend.

    The backend is chosen by class, the LightningCLI way: ``class_path`` names a subclass (the
    short class name is enough for those imported by :mod:`recapture.depth`) and ``init_args`` its
    settings::

        depth:
          class_path: TransformersDepthSource
          init_args:
            model: depth-anything/Depth-Anything-V2-Small-hf

    or ``--data.depth FileDepthSource --data.depth.path depth.npy`` on the command line. The
    default is :class:`~recapture.depth.PriorDepthSource` (weight-free, no real depth). A new
    backend is one ``@dataclass`` subclass in one module: its fields are its settings, :meth:`build`
    returns its :class:`DepthEstimator`, and :meth:`resolve_weights` finds the weights it will load;
    its import path selects it with no other change (``tests/depth/test_depth_sources_cli.py``).

    The fields here are shared by every backend; a backend ignores those it does not use (the
    prior uses none of them).

    Attributes:
        disparity_mapping: how disparity becomes depth (relative models, disparity files).
        align: per-frame scale/shift alignment to the first frame (reduces flicker); ``None`` turns
            it on for relative models and disparity files.
        batch_size: frames per model call.
        device: where the depth model runs; ``None`` is the run's device (the trainer's accelerator
            and devices), the CPU outside a run.
        dtype: ``"auto"`` is float16 on CUDA and float32 on CPU.
        progress: show a progress bar over frames.
    """

    needs_weights: ClassVar[bool] = False  # True when build() loads model weights (resolve_weights finds them)

    disparity_mapping: DisparityMapping = field(default_factory=DisparityMapping)
    align: bool | None = None
    batch_size: int = 4
    device: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.disparity_mapping, dict):  # plain dicts from notebooks
            self.disparity_mapping = DisparityMapping(**self.disparity_mapping)

    @abstractmethod
    def build(self, fov_deg: float | None = None, device: torch.device | str | None = None) -> DepthEstimator:
        """The estimator these settings describe.

        Args:
            fov_deg: horizontal field of view of the source video in degrees (the file backend
                needs it to turn Euclidean ``distance`` into planar depth).
            device: the run's device, used by model backends when ``device`` is not set (None:
                the CPU).

        Returns:
            a :class:`DepthEstimator` mapping frames ``(T, 3, H, W)`` to planar depth ``(T, 1, H, W)``.
        """

    def resolve_weights(self) -> Path | None:
        """Find the weights :meth:`build` will load (local directory, hub cache or a download now).

        Called before any heavy work, so that a missing model stops the run at once with one line
        naming it; backends without weights do nothing.

        Returns:
            the folder of the weights (``recapture benchmark`` fingerprints it), None without weights.
        """
        return None


def depth_sources() -> dict[str, type[DepthSource]]:
    """Every concrete :class:`DepthSource` subclass imported so far, by class name (sorted)."""
    found: dict[str, type[DepthSource]] = {}
    todo = list(DepthSource.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not inspect.isabstract(cls):
            found.setdefault(cls.__name__, cls)
    return dict(sorted(found.items()))


# the flat form of recapture <= 0.x (``depth: {backend: prior, prior_horizon: ...}``) -> class and renamed fields
_FLAT_BACKENDS = {"prior": "PriorDepthSource", "file": "FileDepthSource", "transformers": "TransformersDepthSource"}
_FLAT_RENAMES = {"prior_horizon": "horizon", "prior_backdrop": "backdrop"}


def migrate_flat_depth(section: dict[str, Any]) -> dict[str, Any]:
    """The ``class_path`` form of an old flat ``depth:`` section (``backend: ...`` with every backend's fields).

    Saved run configs (``config.yaml``) and older user configs keep loading: the named backend's
    class gets the fields it has (the prior's ``prior_horizon``/``prior_backdrop`` become
    ``horizon``/``backdrop``); the other backends' fields, which the old form ignored, are dropped.

    Args:
        section: the old section, a dict with a ``backend`` key.

    Returns:
        ``{"class_path": "recapture.depth.<Class>", "init_args": {...}}``.

    Raises:
        RecaptureError: an unknown ``backend`` value (naming the valid ones).
    """
    backend = section.get("backend")
    if backend not in _FLAT_BACKENDS:
        raise RecaptureError(f"depth.backend: {backend!r} is not a depth backend; use one of {', '.join(_FLAT_BACKENDS)} "
                             f"(or, in the current form, --data.depth CLASS: {', '.join(_FLAT_BACKENDS.values())})")
    name = _FLAT_BACKENDS[backend]
    cls = depth_sources()[name]
    accepted = {f.name for f in fields(cls)}
    init = {_FLAT_RENAMES.get(k, k): v for k, v in section.items() if k != "backend"}
    return {"class_path": f"recapture.depth.{name}", "init_args": {k: v for k, v in init.items() if k in accepted}}


def migrate_flat_depth_sections(config: Any) -> bool:
    """Rewrite, in place, every old flat ``depth:`` section of a loaded config tree; True if one was found.

    Sections naming an unknown backend are left as they are, for the parser's one-line error.
    """
    found = False
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "depth" and isinstance(value, dict) and value.get("backend") in _FLAT_BACKENDS \
                    and "class_path" not in value:  # an unknown backend is left to the parser's error
                config[key] = migrate_flat_depth(value)
                found = True
            else:
                found = migrate_flat_depth_sections(value) or found
    elif isinstance(config, list):
        for item in config:
            found = migrate_flat_depth_sections(item) or found
    return found


_DEPTH_KEY = re.compile(r'Parser key "(?P<key>(?:[\w.]+\.)?depth)":')
_UNKNOWN_OPTION = re.compile(r"class_path '(?P<cls>[\w.]+)':\s*Option '(?P<opt>\w+)' is not accepted")
_UNKNOWN_CLASS = (
    re.compile(r"Expected a dot import path string: ?(?P<value>\S*)"),
    re.compile(r"class_path '(?P<value>[\w.]+)':\s*(?:module '[\w.]+' has no attribute|No module named)"),
    re.compile(r"Import path (?P<value>\S+) does not correspond to a subclass"),
)


def explain_depth_error(message: str) -> str:
    """One line for a command-line/config error in a ``depth`` section; other messages unchanged.

    jsonargparse's messages for a subclass-typed option are several lines about import paths; for
    ``data.depth`` this names the value and the valid choices instead: an unknown class, the old
    flat ``backend:`` key (the backend is a class now), or a setting given to a backend that does
    not have it (naming the backends that do).

    Args:
        message: the parser's error message.

    Returns:
        the explained message, or ``message`` itself when it is not about a depth section.
    """
    found = _DEPTH_KEY.match(message.strip())
    if found is None:
        return message
    key = found["key"]
    sources = depth_sources()
    choices = ", ".join(sources)
    option = _UNKNOWN_OPTION.search(message)
    if option is not None:
        opt, current = option["opt"], option["cls"].rsplit(".", 1)[-1]
        if opt == "backend":
            return (
                f"{key}.backend is gone: the depth backend is a class, chosen with --{key} CLASS (YAML: "
                f"class_path: CLASS under {key.rsplit('.', 1)[-1]}:, its settings under init_args:), e.g. --{key} "
                f"TransformersDepthSource; CLASS is one of {choices}"
            )
        owners = [name for name, cls in sources.items() if opt in {f.name for f in fields(cls)}]
        if owners:
            return (
                f"{key}.{opt} is not a setting of {current}; {' and '.join(owners)} "
                f"{'has' if len(owners) == 1 else 'have'} it: choose the backend first, e.g. --{key} {owners[0]} "
                f"--{key}.{opt} ..."
            )
        settings = ", ".join(f.name for f in fields(sources[current])) if current in sources else "?"
        return f"{key}.{opt} is not a setting of {current} (its settings: {settings})"
    for pattern in _UNKNOWN_CLASS:
        value = pattern.search(message)
        if value is not None:
            return (
                f"{key}: {value['value']!r} is not a depth backend; choose one of {choices} (or the import path "
                "of your own recapture.depth.DepthSource subclass)"
            )
    return message


def check_frames(frames: Tensor, name: str = "frames") -> None:
    """Raise a :class:`RecaptureError` unless ``frames`` is a ``(T, 3, H, W)`` video with frames."""
    check_video(frames, name, fix="pass the video's frames, float in [0, 1]")
    if frames.shape[0] == 0:
        raise RecaptureError(f"{name} has no frames (shape {tuple(frames.shape)})")


def check_depth(depth: Tensor, frames: Tensor | None = None, valid: Tensor | None = None) -> None:
    """Raise a :class:`RecaptureError` naming the frames if depth is malformed.

    Args:
        depth: planar depth ``(T, 1, H, W)``.
        frames: optional video ``(T, 3, H, W)`` the depth must match.
        valid: optional mask ``(T, 1, H, W)``; only pixels where it is nonzero are checked.
    """
    check_video(depth, "depth", channels=1, fix="planar depth has one channel per frame")
    if frames is not None and (depth.shape[0] != frames.shape[0] or depth.shape[-2:] != frames.shape[-2:]):
        raise RecaptureError(
            f"depth {tuple(depth.shape)} does not match frames {tuple(frames.shape)}: need "
            f"({frames.shape[0]}, 1, {frames.shape[-2]}, {frames.shape[-1]}); estimate depth for these "
            "exact frames or resize it"
        )
    d = depth.detach()
    ok = torch.isfinite(d) & (d > 0)
    if valid is not None:
        ok = ok | (valid.detach() == 0)
    bad = (~ok).flatten(1).any(1)
    if bool(bad.any()):
        frames_bad = bad.nonzero().flatten().tolist()
        what = []
        if bool(torch.isnan(d).any()):
            what.append("NaN")
        if bool(torch.isinf(d).any()):
            what.append("inf")
        if bool((d <= 0).any()):
            what.append("non-positive")
        shown = ", ".join(map(str, frames_bad[:10])) + (" ..." if len(frames_bad) > 10 else "")
        raise RecaptureError(
            f"depth has {'/'.join(what)} values in {len(frames_bad)} of {d.shape[0]} frames "
            f"(frame {shown}); depth must be finite and > 0: fix or regenerate the depth (for sensor "
            "depth with holes, pass a source mask that excludes them)"
        )


def scene_scale(depth: Tensor) -> float:
    """The median depth of the first frame: the length of one scene unit.

    Args:
        depth: planar depth ``(T, 1, H, W)`` (or ``(1, H, W)`` / ``(H, W)`` for one frame).

    Returns:
        the median of frame 0 as a Python float.
    """
    first = depth[0] if depth.ndim >= 3 else depth
    first = first.detach()
    first = first[torch.isfinite(first) & (first > 0)]
    if first.numel() == 0:
        raise RecaptureError("scene_scale: the first frame has no valid (finite, > 0) depth")
    return float(first.float().median())
