"""Config-friendly trajectory descriptions (YAML / jsonargparse), built into a :class:`Trajectory`.

Example YAML (the ``trajectory:`` section of a data module)::

    trajectory:
      preset: orbit        # one move ...
      amount: 20
      mode: gradual
      easing: ease_in_out
      pivot_depth: 1.0
      # ... or a composition (overrides preset/amount):
      # moves: [{preset: orbit, amount: 20}, {preset: dolly, amount: 0.1}]
      # ... or a file (overrides both):
      # file: my_path.json
      # file_format: auto
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from recapture.utils import RecaptureError

if TYPE_CHECKING:  # runtime imports of trajectory.py are lazy: it imports this module (document_presets)
    from recapture.cameras.trajectory import Trajectory

__all__ = ["MoveSpec", "TrajectorySpec", "document_presets"]

_MODES = ("gradual", "direct")
_EASINGS = ("linear", "ease_in_out")


def _check_choice(value: Any, name: str, choices: tuple[str, ...], allow_none: bool = False) -> None:
    if (value is None and allow_none) or (isinstance(value, str) and value in choices):
        return
    raise RecaptureError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")


def _check_move(spec: Any, where: str, inherit: bool) -> None:
    """Check (and normalise to floats) the fields shared by :class:`MoveSpec` and :class:`TrajectorySpec`.

    ``inherit``: timing fields may be None (a move inheriting them).
    """
    from recapture.cameras.poses import as_float
    from recapture.cameras.trajectory import PRESETS

    _check_choice(spec.preset, f"{where}.preset", PRESETS, allow_none=not isinstance(spec, MoveSpec))
    spec.amount = as_float(spec.amount, f"{where}.amount")
    _check_choice(spec.mode, f"{where}.mode", _MODES, allow_none=inherit)
    _check_choice(spec.easing, f"{where}.easing", _EASINGS, allow_none=inherit)
    if spec.pivot_depth is not None or not inherit:
        spec.pivot_depth = as_float(spec.pivot_depth, f"{where}.pivot_depth")
        if spec.pivot_depth <= 0:
            raise RecaptureError(
                f"{where}.pivot_depth must be > 0 scene units (1 = median depth), got {spec.pivot_depth}."
            )


@dataclass
class MoveSpec:
    """One move of a composition; unset timing fields inherit the enclosing :class:`TrajectorySpec`.

    Args:
        preset: {presets}.
        amount: degrees, scene units or relative focal change (see ``recapture.cameras.trajectory``).
        mode: ``gradual`` or ``direct``; None inherits.
        easing: ``linear`` or ``ease_in_out``; None inherits.
        pivot_depth: orbit/arc pivot depth in scene units; None inherits.
    """

    preset: str
    amount: float
    mode: Literal["gradual", "direct"] | None = None
    easing: Literal["linear", "ease_in_out"] | None = None
    pivot_depth: float | None = None

    def __post_init__(self) -> None:
        _check_move(self, "MoveSpec", inherit=True)


@dataclass
class TrajectorySpec:
    """Where the new camera path comes from: a preset, a composition of moves, or a file.

    Precedence: ``file`` > ``moves`` > ``preset``.

    Args:
        preset: {presets}; None with no moves and no file is an error.
        amount: preset amount (degrees, scene units or relative focal change).
        mode: ``gradual`` (source pose -> target over the clip) or ``direct`` (target throughout).
        easing: ``linear`` or ``ease_in_out``.
        pivot_depth: orbit/arc pivot and dolly-zoom plane depth in scene units (1 = median depth);
            also the radius for TrajectoryCrafter/CogNVS text files.
        moves: composition of moves applied in order, e.g. orbit then dolly.
        file: trajectory file (recapture JSON, nerfstudio ``transforms.json``, COLMAP text model,
            ReCamMaster ``camera_extrinsics.json``, TrajectoryCrafter/CogNVS ``.txt``).
        file_format: ``auto`` or a format name: recapture, nerfstudio, colmap, recammaster,
            trajectorycrafter or cognvs (``recapture.cameras.formats.FORMATS``).
        file_camera: camera key for multi-camera files (ReCamMaster ``cam01`` ...).
    """

    preset: str | None = "orbit"
    amount: float = 20.0
    mode: Literal["gradual", "direct"] = "gradual"
    easing: Literal["linear", "ease_in_out"] = "ease_in_out"
    pivot_depth: float = 1.0
    moves: list[MoveSpec] | None = None
    file: str | None = None
    file_format: str = "auto"
    file_camera: str | None = None

    def __post_init__(self) -> None:
        _check_move(self, "TrajectorySpec", inherit=False)
        if self.moves is not None:
            if not isinstance(self.moves, (list, tuple)):
                raise RecaptureError(f"TrajectorySpec.moves must be a list of moves, got {self.moves!r}.")
            self.moves = [self._as_move(i, move) for i, move in enumerate(self.moves)]
        if isinstance(self.file, os.PathLike):
            self.file = os.fspath(self.file)
        if self.file is not None and not isinstance(self.file, str):
            raise RecaptureError(f"TrajectorySpec.file must be a path, got {self.file!r}.")
        from recapture.cameras.formats import FORMATS

        _check_choice(self.file_format, "TrajectorySpec.file_format", ("auto", *FORMATS))
        if self.file_camera is not None and not isinstance(self.file_camera, str):
            raise RecaptureError(
                f"TrajectorySpec.file_camera must be a camera name like 'cam01', got {self.file_camera!r}."
            )

    @staticmethod
    def _as_move(i: int, move: Any) -> MoveSpec:
        """``moves[i]`` as a checked :class:`MoveSpec` (plain dicts from Python callers are converted)."""
        where = f"TrajectorySpec.moves[{i}]"
        if isinstance(move, dict):
            unknown = sorted(set(move) - {f.name for f in fields(MoveSpec)})
            if unknown or "preset" not in move or "amount" not in move:
                raise RecaptureError(
                    f"{where} = {move!r} needs the keys preset and amount (optional: mode, easing, pivot_depth)"
                    + (f"; unknown: {', '.join(map(str, unknown))}." if unknown else ".")
                )
            try:
                move = MoveSpec(**move)
            except RecaptureError as err:  # name the position in the list
                raise RecaptureError(f"{where}: {err}") from err
        if not isinstance(move, MoveSpec):
            raise RecaptureError(f"{where} must be a MoveSpec or a dict, got {type(move).__name__}.")
        _check_move(move, where, inherit=True)
        return move

    def build(self, num_frames: int) -> Trajectory:
        """Make the :class:`~recapture.cameras.trajectory.Trajectory` for a clip of ``num_frames`` frames.

        Files with a different pose count are resampled (with a logged notice).
        """
        from recapture.cameras.trajectory import compose, make_trajectory

        if self.file is not None:
            if self.moves:
                raise RecaptureError(
                    "TrajectorySpec has both `file` and `moves`; set only one (a file already describes the path)."
                )
            from recapture.cameras.formats import load_trajectory

            return load_trajectory(
                self.file, format=self.file_format, num_frames=num_frames,
                pivot_depth=self.pivot_depth, camera=self.file_camera,
            )
        if self.moves:
            parts = []
            for i, move in enumerate(self.moves):
                move = self._as_move(i, move)  # moves may have been edited since __post_init__
                parts.append(
                    make_trajectory(
                        move.preset, move.amount, num_frames,
                        mode=move.mode or self.mode, easing=move.easing or self.easing,
                        pivot_depth=self.pivot_depth if move.pivot_depth is None else move.pivot_depth,
                    )
                )
            return compose(*parts)
        if self.preset is None:
            raise RecaptureError("TrajectorySpec needs a `preset`, a list of `moves` or a `file`.")
        return make_trajectory(
            self.preset, self.amount, num_frames, mode=self.mode, easing=self.easing, pivot_depth=self.pivot_depth
        )


_DOCS = {cls: cls.__doc__ or "" for cls in (MoveSpec, TrajectorySpec)}


def document_presets(names: Iterable[str]) -> None:
    """Write the preset ``names`` into the ``preset`` help of :class:`MoveSpec` and :class:`TrajectorySpec`.

    Called by :func:`recapture.cameras.trajectory.register_preset`, so that ``--help`` (which reads
    these docstrings) lists the registered presets, whatever registered them.
    """
    names = list(names)
    listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names) or "(none registered)"
    for cls, doc in _DOCS.items():
        cls.__doc__ = doc.replace("{presets}", f"a registered preset: {listed}")
