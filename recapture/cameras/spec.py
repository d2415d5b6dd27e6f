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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from recapture.utils import RecaptureError

if TYPE_CHECKING:  # runtime imports are lazy: trajectory.py re-exports these classes
    from recapture.cameras.trajectory import Trajectory

__all__ = ["MoveSpec", "TrajectorySpec"]


@dataclass
class MoveSpec:
    """One move of a composition; unset timing fields inherit the enclosing :class:`TrajectorySpec`.

    Args:
        preset: pan, tilt, roll, truck, pedestal, dolly, zoom, orbit, arc or dolly_zoom.
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


@dataclass
class TrajectorySpec:
    """Where the new camera path comes from: a preset, a composition of moves, or a file.

    Precedence: ``file`` > ``moves`` > ``preset``.

    Args:
        preset: preset name (see ``recapture.cameras.trajectory.PRESETS``); None with no moves and
            no file is an error.
        amount: preset amount (degrees, scene units or relative focal change).
        mode: ``gradual`` (source pose -> target over the clip) or ``direct`` (target throughout).
        easing: ``linear`` or ``ease_in_out``.
        pivot_depth: orbit/arc pivot and dolly-zoom plane depth in scene units (1 = median depth);
            also the radius for TrajectoryCrafter/CogNVS text files.
        moves: composition of moves applied in order, e.g. orbit then dolly.
        file: trajectory file (recapture JSON, nerfstudio ``transforms.json``, COLMAP text model,
            ReCamMaster ``camera_extrinsics.json``, TrajectoryCrafter/CogNVS ``.txt``).
        file_format: ``auto`` or a format name from ``recapture.cameras.formats.FORMATS``.
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
                if isinstance(move, dict):  # plain dicts from Python callers
                    move = MoveSpec(**move)
                if not isinstance(move, MoveSpec):
                    raise RecaptureError(f"moves[{i}] must be a MoveSpec or a dict, got {type(move).__name__}.")
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
