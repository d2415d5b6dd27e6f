"""A test callback that crashes a ``recapture benchmark`` rank at its second scene (a rank dying mid-sweep).

Passed to the subprocesses of the resume test as ``--trainer.callbacks+=crash_callback.CrashAfterOwnScenes``
(the test puts this folder on ``PYTHONPATH``): crashes are simulated from outside, not by a switch in
the production settings. It raises while a scene's trainer is being built once this rank has
finished ``count`` scenes (their JSONs carry the rank), before that scene's loggers start a run,
as a process killed between scenes would leave things.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightning.pytorch import Callback


class CrashAfterOwnScenes(Callback):
    """Raise ``RuntimeError("simulated crash ...")`` once ``scenes_dir`` holds ``count`` scenes of this rank."""

    def __init__(self, scenes_dir: str, count: int = 1) -> None:
        rank = int(os.environ.get("RANK", "0"))
        own = [p for p in Path(scenes_dir).glob("scn*.json") if json.loads(p.read_text()).get("rank") == rank]
        if len(own) >= count:
            raise RuntimeError(f"simulated crash: rank {rank} stops after {len(own)} scene(s)")
