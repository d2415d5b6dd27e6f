"""The RAFT factory fails clearly where it cannot run (no weights file; no usable torchvision)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recapture.metrics.flow import WEIGHTS_ENV, raft_large
from recapture.utils import RecaptureError


def test_missing_weights_names_the_variable_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(RecaptureError, match=f"{WEIGHTS_ENV}.*raft_large_C_T_V1"):
        raft_large()


def test_without_torchvision_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    weights = tmp_path / "raft.pth"
    weights.write_bytes(b"not used")
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as it does with the CPU torch
    monkeypatch.setitem(sys.modules, "torchvision.models.optical_flow", None)
    with pytest.raises(RecaptureError, match=r"recapture\[vbench\]"):
        raft_large()
