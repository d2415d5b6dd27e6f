"""Which scenes ``recapture benchmark`` evaluates and where they come from (chosen once, by :func:`scene_source`).

* :class:`DatasetScenes`: scenes of a Kubric-4D release on disk, by named list (``test100``,
  ``test50``, ``test20``) or explicit ids.
* :class:`GeneratedScenes`: the synthetic ``kubric-mini`` scenes (exact depth), each written in the
  dataset's layout just before it is evaluated.

Both answer the same four questions (``scene_ids``, ``check``, ``prepare``, ``key``), so the sweep
never asks which kind it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recapture.data.kubric.reader import scene_name
from recapture.data.kubric.synthetic import write_kubric_mini
from recapture.utils import RecaptureError

__all__ = [
    "KUBRIC_MINI",
    "SCENE_LISTS",
    "DatasetScenes",
    "GeneratedScenes",
    "MiniScenes",
    "SceneSource",
    "make_scene_source",
    "resolve_scene_ids",
]

KUBRIC_MINI = "kubric-mini"
# evaluation lists of the Kubric-4D test split (benchmarks spec 1.1): (first scene, count)
SCENE_LISTS: dict[str, tuple[int, int]] = {"test100": (2900, 100), "test50": (2900, 50), "test20": (2900, 20)}


@dataclass
class MiniScenes:
    """The synthetic ``kubric-mini`` scenes, generated on demand (exact depth; see ``write_kubric_mini``).

    Args:
        num_scenes: how many scenes (``scn02900`` onwards).
        num_frames: frames per view (at least ``protocol.num_frames``).
        size: ``(H, W)`` of the generated frames.
        seed: base seed (scene ``i`` uses ``seed + i``).
        supersample: colour sub-pixel rays per side.
    """

    num_scenes: int = 4
    num_frames: int = 20
    size: tuple[int, int] = (128, 192)
    seed: int = 0
    supersample: int = 2


def resolve_scene_ids(scenes: str | Sequence[str | int], mini: MiniScenes | None = None) -> list[str]:
    """Scene ids of a named list (``test100``/``test50``/``test20``/``kubric-mini``) or of explicit ids."""
    if isinstance(scenes, str) and scenes in SCENE_LISTS:
        first, count = SCENE_LISTS[scenes]
        return [scene_name(first + i) for i in range(count)]
    if isinstance(scenes, str) and scenes == KUBRIC_MINI:
        return GeneratedScenes(Path(KUBRIC_MINI), mini or MiniScenes()).scene_ids()
    items = [s.strip() for s in scenes.split(",")] if isinstance(scenes, str) else list(scenes)
    ids: list[str] = []
    for item in items:
        try:
            ids.append(scene_name(item))
        except RecaptureError as err:
            raise RecaptureError(
                f"kubric.scenes: {item!r} is not a scene id; use test100, test50, test20, {KUBRIC_MINI} "
                "or ids like scn02900 (a list or comma-separated)"
            ) from err
    if not ids:
        raise RecaptureError("kubric.scenes is empty; use test100, test50, test20, kubric-mini or scene ids")
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class DatasetScenes:
    """Scenes of a Kubric-4D release on disk (``kubric.root``), by named list or ids."""

    root: Path | None
    ids: tuple[str, ...]

    def scene_ids(self) -> list[str]:
        """The scenes to evaluate, in order."""
        return list(self.ids)

    def check(self) -> None:
        """Raise unless the dataset root is configured."""
        if self.root is None:
            raise RecaptureError("kubric.root is not set; pass the Kubric-4D dataset root (holding scnXXXXX/ folders)")

    def prepare(self, scene_id: str) -> Path:
        """The root holding ``scene_id`` (already on disk)."""
        assert self.root is not None
        return self.root

    def key(self) -> Any:
        """What changes the scenes' content beyond their ids (nothing: the release is fixed)."""
        return None


@dataclass(frozen=True)
class GeneratedScenes:
    """The synthetic ``kubric-mini`` scenes, each written into ``root`` just before it is evaluated."""

    root: Path
    mini: MiniScenes

    def scene_ids(self) -> list[str]:
        """``scn02900`` onwards, ``mini.num_scenes`` of them (named like the test split)."""
        first = SCENE_LISTS["test100"][0]
        return [scene_name(first + i) for i in range(self.mini.num_scenes)]

    def check(self) -> None:
        """Nothing to check: the scenes are generated."""

    def prepare(self, scene_id: str) -> Path:
        """Write ``scene_id`` (skipped when its files are there already) and return the root."""
        m = self.mini
        index = int(scene_id[3:]) - SCENE_LISTS["test100"][0]
        write_kubric_mini(self.root, m.num_scenes, m.num_frames, m.size, m.seed, supersample=m.supersample, only=[index])
        return self.root

    def key(self) -> Any:
        """The generator's settings (they change every scene's pixels)."""
        return asdict(self.mini)


SceneSource = DatasetScenes | GeneratedScenes



def make_scene_source(scenes: str | Sequence[str | int], root: str | None, output: str,
                      mini: MiniScenes) -> SceneSource:
    """Where the scenes come from: generated (``scenes: kubric-mini``, into ``root`` or ``<output>/kubric-mini``)
    or a dataset ``root``; the one place that tells the two apart."""
    if scenes == KUBRIC_MINI:
        return GeneratedScenes(Path(root) if root else Path(output) / KUBRIC_MINI, mini)
    return DatasetScenes(Path(root) if root else None, tuple(resolve_scene_ids(scenes)))
