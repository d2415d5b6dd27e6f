"""Depth backends are classes selected by ``class_path`` through the real ``recapture`` CLI.

A backend defined here, in one class and no other file, is selectable by its import path (and its
short name) in YAML and on the command line; the old flat ``backend:`` key, a typo'd class and a
setting given to the wrong backend are one-line errors naming the new way and the valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import yaml

from recapture.cli import cli_main
from recapture.depth import (
    DepthSource,
    FileDepthSource,
    PriorDepthSource,
    TransformersDepthSource,
    check_frames,
)
from recapture.depth.base import depth_sources

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ConstantDepth(DepthSource):
    """A whole backend in one class: its settings, and (returned by ``build``) its own estimator.

    Attributes:
        value: the depth of every pixel.
    """

    is_prior: ClassVar[bool] = False

    value: float = 2.0

    @property
    def name(self) -> str:
        return f"constant:{self.value}"

    def build(self, fov_deg: float | None = None, device: torch.device | str | None = None) -> ConstantDepth:
        return self

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """Planar depth ``(T, 1, H, W)`` equal to ``value`` for frames ``(T, 3, H, W)``."""
        check_frames(frames)
        t, _, h, w = frames.shape
        return torch.full((t, 1, h, w), self.value, device=frames.device)


CONSTANT = f"{ConstantDepth.__module__}.{ConstantDepth.__qualname__}"  # this module, as pytest imported it


def _print_config(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    """The ``data.depth`` section ``recapture anchor ... --print_config`` resolves."""
    with pytest.raises(SystemExit) as done:
        cli_main(["anchor", *args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)["data"]["depth"]


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one error line ``recapture anchor ...`` prints (exit status 2)."""
    with pytest.raises(SystemExit) as done:
        cli_main(["anchor", *args, "--print_config"])
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[1] == "(`recapture anchor --help` lists every option)", lines
    assert lines[0].startswith("recapture anchor: error: ")
    return lines[0]


def test_the_default_and_the_shipped_backends_by_class_path(capsys: pytest.CaptureFixture[str]) -> None:
    default = _print_config(capsys)
    assert default["class_path"] == "recapture.depth.PriorDepthSource"
    assert default["init_args"]["horizon"] == 0.4 and default["init_args"]["backdrop"] == 3.0
    orbit = _print_config(capsys, "--config", str(REPO / "configs" / "orbit.yaml"), "--data.depth.input_size", "392")
    assert orbit["class_path"] == "recapture.depth.TransformersDepthSource"
    assert orbit["init_args"]["model"] == "depth-anything/Depth-Anything-V2-Small-hf"
    assert orbit["init_args"]["input_size"] == 392
    short = _print_config(capsys, "--data.depth", "FileDepthSource", "--data.depth.path", "x.npy",
                          "--data.depth.disparity_mapping.far", "30")
    full = _print_config(capsys, "--data.depth", "recapture.depth.FileDepthSource", "--data.depth.path", "x.npy",
                         "--data.depth.disparity_mapping.far", "30")
    assert short == full and short["class_path"] == "recapture.depth.FileDepthSource"
    assert short["init_args"]["path"] == "x.npy" and short["init_args"]["disparity_mapping"]["far"] == 30.0


def test_a_backend_defined_in_one_class_is_selectable_by_class_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "depth.yaml"
    config.write_text(yaml.safe_dump({"data": {"depth": {"class_path": CONSTANT, "init_args": {"value": 5.0}}}}))
    from_yaml = _print_config(capsys, "--config", str(config))
    assert from_yaml["class_path"] == CONSTANT and from_yaml["init_args"]["value"] == 5.0
    by_name = _print_config(capsys, "--data.depth", "ConstantDepth", "--data.depth.value", "5")
    assert by_name == from_yaml
    assert "ConstantDepth" in depth_sources()  # and it is listed among the choices in errors

    # parsed and instantiated by the project's CLI classes, it is what stage 1 runs
    from recapture.training.cli import ReCaptureArgumentParser, ReCaptureCLI, ReCaptureTrainer
    from recapture.training.datamodule import ReCaptureDataModule
    from recapture.training.module import ReCaptureModule

    cli = ReCaptureCLI(ReCaptureModule, ReCaptureDataModule, trainer_class=ReCaptureTrainer,
                       parser_class=ReCaptureArgumentParser, save_config_callback=None, run=False,
                       seed_everything_default=0,
                       args=["--config", str(config), "--model.components.tiny", "true", "--trainer.logger", "false",
                             "--data.anchor.cache_dir", "null", "--data.anchor.progress", "false"])
    data = cli.datamodule
    assert data.depth == ConstantDepth(value=5.0) and not data.needs_depth_model()
    data.use_sample(torch.rand(3, 3, 32, 48), fps=8.0)
    result = data.build_anchor()
    assert result.report["depth_source"] == "constant:5.0" and not result.report["depth_is_prior"]
    assert torch.equal(result.depth, torch.full((3, 1, 32, 48), 5.0))


def test_the_old_backend_key_and_wrong_classes_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--data.depth.backend", "prior"], ["--data.depth.backend", "bogus"]):
        line = _error(capsys, *args)
        assert "data.depth.backend is gone" in line and "--data.depth CLASS" in line, line
        assert "class_path: CLASS under depth:" in line and "init_args" in line, line
        assert "FileDepthSource, PriorDepthSource, TransformersDepthSource" in line, line
    for typo in ("FileDepthSorce", "recapture.depth.FileDepthSorce", "torch.nn.Linear"):
        line = _error(capsys, "--data.depth", typo)
        assert f"data.depth: '{typo}' is not a depth backend; choose one of " in line, line
        assert "ConstantDepth, FileDepthSource, PriorDepthSource, TransformersDepthSource" in line, line
    line = _error(capsys, "--data.depth.path", "x.npy")  # a file setting, but the default is the prior
    assert "data.depth.path is not a setting of PriorDepthSource; FileDepthSource has it" in line, line
    assert "--data.depth FileDepthSource --data.depth.path" in line, line


def test_configs_of_older_runs_in_the_flat_form_still_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A saved ``config.yaml`` with ``depth: {backend: ...}`` (every backend's fields) loads as its class, warned."""
    flat = {"model": "depth-anything/Depth-Anything-V2-Small-hf", "metric": None, "input_size": 518, "path": None,
            "kind": "depth", "units": 1.0, "align": None, "prior_horizon": 0.3, "prior_backdrop": 2.5,
            "batch_size": 2, "device": None, "dtype": "auto", "progress": True}
    expected = {
        "prior": ("PriorDepthSource", {"horizon": 0.3, "backdrop": 2.5, "batch_size": 2}),
        "file": ("FileDepthSource", {"path": "d.npy", "kind": "distance", "units": 0.001}),
        "transformers": ("TransformersDepthSource", {"model": "my/depth", "input_size": 392}),
    }
    overrides = {"file": {"path": "d.npy", "kind": "distance", "units": 0.001},
                 "transformers": {"model": "my/depth", "input_size": 392}}
    for backend, (name, values) in expected.items():
        config = tmp_path / f"{backend}.yaml"
        section = {"backend": backend, **flat, **overrides.get(backend, {})}
        config.write_text(yaml.safe_dump({"data": {"depth": section}}))
        caplog.clear()
        with caplog.at_level("WARNING"):
            loaded = _print_config(capsys, "--config", str(config))
        assert loaded["class_path"] == f"recapture.depth.{name}", backend
        for key, value in values.items():
            assert loaded["init_args"][key] == value, (backend, key)
        assert "old form (backend: ...)" in caplog.text, backend
    # an unknown backend in the old form is not guessed: the parser's one-line error names the new way
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  depth:\n    backend: midas\n")
    line = _error(capsys, "--config", str(bad))
    assert "data.depth.backend is gone" in line and "--data.depth CLASS" in line, line


def test_cache_tokens_keep_their_meaning(tmp_path: Path) -> None:
    """The anchor cache key reads these: the same settings must give the same token as before."""
    mapping = {"mode": "near_far", "near": 1.0, "far": 10.0, "low_percentile": 1.0, "high_percentile": 99.0}
    assert PriorDepthSource(horizon=0.3, backdrop=4.0).build().cache_token == {
        "name": "prior:ground-plane", "horizon": 0.3, "near": 1.0, "far": 4.0
    }
    assert TransformersDepthSource(model="m", input_size=392).build().cache_token == {
        "model": "m", "metric": None, "input_size": 392, "disparity_mapping": mapping, "align": None, "dtype": "auto"
    }
    (tmp_path / "d.npy").write_bytes(b"")
    token = FileDepthSource(path=str(tmp_path / "d.npy"), kind="disparity", units=0.5).build(fov_deg=50.0).cache_token
    assert set(token) == {"file", "fov", "K", "kind", "units", "disparity_mapping", "align"}
    assert (token["fov"], token["K"], token["kind"], token["units"]) == (50.0, None, "disparity", 0.5)
    assert token["disparity_mapping"] == mapping and token["align"] is None
    # dicts (notebooks) become a DisparityMapping without touching the caller's object
    given = {"far": 20.0}
    assert FileDepthSource(disparity_mapping=given).disparity_mapping.far == 20.0 and given == {"far": 20.0}
