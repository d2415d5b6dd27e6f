"""A command-line or config mistake is one line naming it (exit 2); the usage is printed only on --help."""

from __future__ import annotations

import pytest

from recapture.cli import cli_main


def _error_lines(capsys: pytest.CaptureFixture[str], args: list[str]) -> list[str]:
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["fit", "--config", "configs/demo.yaml", "--data.bogus", "3"],
         "recapture fit: error: unrecognized arguments: --data.bogus 3"),
        # a prefix of --data.num_frames is refused, not silently expanded
        (["fit", "--config", "configs/demo.yaml", "--data.num_frame", "3"],
         "recapture fit: error: unrecognized arguments: --data.num_frame 3"),
        (["anchor", "--config", "configs/demo.yaml", "--trainer.max_step", "3"],
         "recapture anchor: error: unrecognized arguments: --trainer.max_step 3"),
        (["evaluate", "--predictio", "x.mp4"], "recapture evaluate: error: unrecognized arguments: --predictio x.mp4"),
    ],
)
def test_unknown_or_abbreviated_options_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str],
                                                     first_line: str) -> None:
    lines = _error_lines(capsys, args)
    errors = [i for i, line in enumerate(lines) if ": error: " in line]
    assert errors and lines[errors[0]] == first_line, lines
    assert not any(line.lstrip().startswith("usage:") or "[--" in line for line in lines), lines
    assert lines[-1] == f"(`{first_line.split(': error')[0]} --help` lists every option)"


def test_a_wrong_type_names_the_key_and_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _error_lines(capsys, ["fit", "--config", "configs/demo.yaml", "--data.num_frames", "abc"])
    first = next(i for i, line in enumerate(lines) if ": error: " in line)
    assert lines[first].startswith("recapture fit: error: ") and "data.num_frames" in lines[first]
    assert "abc" in " ".join(lines[first:]) and len(lines) - first <= 4, lines


def test_pretrain_errors_are_short_too(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _error_lines(capsys, ["pretrain", "--config", "configs/pretrain/recapture-tiny-vae.yaml",
                                  "--trainer.max_step", "3"])
    assert lines == ["recapture pretrain: error: unrecognized arguments: --trainer.max_step 3",
                     "  did you mean --trainer.max_steps?  (for --trainer.max_step)",
                     "(`recapture pretrain --help` lists every option)"], lines


def test_help_still_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["evaluate", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: recapture evaluate")


def test_evaluate_help_shows_the_weights_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "--help"])
    out = capsys.readouterr().out
    for flag in ("--weights.lpips_alexnet", "--weights.dino", "--weights.flow", "--weights.device"):
        assert f"  {flag} " in out, flag
    assert "  --lpips_alexnet" not in out and "cammc" in out  # no flat copies; names from the registry


def test_fit_help_leads_with_the_options_people_change(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "usage: recapture fit --config FILE [options]"
    lead = out[: out.index("\noptions:")]
    for flag in ("--data.video", "--data.trajectory.preset", "--data.size", "--trainer.max_steps",
                 "--trainer.default_root_dir", "--ckpt_path"):
        assert f"  {flag} " in lead, flag
        assert f"  {flag} " in out[len(lead):], f"{flag} is not a real option"  # listed again in full
    # what --data.size does to the picture is said exactly: no distortion, crop (or pad), enlarging warned
    size_help = " ".join(out[out.index("  --data.size SIZE"):].split("\n  --")[0].split())
    for words in ("scaled without distortion", "centre-cropped", "(or padded", "enlarged, with a warning"):
        assert words in size_help, words


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["fit", "--config", "configs/demo.yaml", "--trainer.max_stepz", "3"],
         "did you mean --trainer.max_steps?  (for --trainer.max_stepz)"),
        (["fit", "--config", "configs/demo.yaml", "--data.num_frame", "3"],
         "did you mean --data.num_frames?  (for --data.num_frame)"),
        (["fit", "--config", "configs/demo.yaml", "--data.bogus", "3"], None),  # nothing close: no guess
    ],
)
def test_a_mistyped_option_gets_the_closest_real_one(capsys: pytest.CaptureFixture[str], args: list[str],
                                                     hint: str | None) -> None:
    lines = _error_lines(capsys, args)
    hints = [line.strip() for line in lines if "did you mean" in line]
    assert hints == ([hint] if hint else []), lines


def test_a_mistyped_config_key_gets_the_closest_real_one(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  num_framez: 5\n")
    lines = _error_lines(capsys, ["fit", "--config", "configs/demo.yaml", "--config", str(typo)])
    assert "did you mean data.num_frames?  (for data.num_framez)" in [line.strip() for line in lines], lines


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("model.lora.rank", "0", r"model.lora.rank=0 must be an integer >= 1"),
        ("model.lora.dropout", "1.0", r"model.lora.dropout=1.0 must be in \[0, 1\)"),
        ("model.objective.p_std", "-1", r"model.objective.p_std=-1.0 must be > 0"),
        ("model.objective.conditioning_dropout", "2", r"model.objective.conditioning_dropout=2.0 must be in \[0, 1\]"),
        # an epoch of 0 steps trained nothing, then generated and reported as if it had
        ("data.steps_per_epoch", "0", r"data.steps_per_epoch must be >= 1"),
        # a long side below 64 was silently rendered at 64
        ("data.size", "10", r"size=10 is below the smallest long side, 64 .*use 64 or more, or an exact pair"),
        ("model.compile_backend", "indcutor", r"did you mean 'inductor'"),
    ],
)
def test_an_invalid_setting_stops_before_any_work(tmp_path, monkeypatch: pytest.MonkeyPatch, option: str,  # noqa: ANN001
                                                  value: str, message: str) -> None:
    """These values used to fail after the anchor was rendered (or not at all)."""
    from pathlib import Path

    from recapture.utils import RecaptureError

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(RecaptureError, match=message):
        cli_main(["fit", "--config", str(repo / "configs" / "demo.yaml"), f"--{option}", value])
    assert not list(tmp_path.iterdir())  # no anchor rendered, no run folder, no W&B run
