"""`recapture benchmark`: scene lists, shards, resumable per-scene results, aggregation, configs, W&B sweep."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recapture.benchmark.launch import DistInfo, dist_info, shard
from recapture.benchmark.results import PAPER_TABLE2, score_video
from recapture.benchmark.sweep import (
    BenchmarkSettings,
    MiniScenes,
    SceneOutput,
    output_dir,
    resolve_scene_ids,
    run_sweep,
    sample_trajectory,
    settings_key,
)
from recapture.data.kubric import load_scene, make_eval_sample, write_kubric_mini
from recapture.data.kubric.protocol import ProtocolSettings
from recapture.utils import RecaptureError

REPO = Path(__file__).resolve().parents[2]
MINI_CONFIG = REPO / "configs" / "benchmarks" / "kubric_mini.yaml"
KUBRIC4D_CONFIG = REPO / "configs" / "benchmarks" / "kubric4d.yaml"
PRIOR_CONFIG = REPO / "configs" / "benchmarks" / "kubric_mini_prior.yaml"
SWEEP_CONFIG = REPO / "configs" / "sweeps" / "kubric_mini_sweep.yaml"

# tiny synthetic scenes shared by the tests (generated once per module)
MINI = MiniScenes(num_scenes=4, num_frames=5, size=(64, 96), seed=0, supersample=1)
PROTOCOL = ProtocolSettings(num_frames=4, render_size=(56, 84))


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kubric_mini")
    write_kubric_mini(root, MINI.num_scenes, MINI.num_frames, MINI.size, MINI.seed, supersample=MINI.supersample)
    return root


def _settings(root: Path, out: Path, **overrides) -> BenchmarkSettings:
    base = dict(root=str(root), scenes="kubric-mini", mini=MINI, protocol=PROTOCOL, resolution=(64, 96),
                output=str(out), save_videos=False, wait_timeout_s=0.0)
    return BenchmarkSettings(**{**base, **overrides})


class FakeRunner:
    """Anchor = the input video, "ReCapture" = an affine change of the target: cheap and deterministic."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.crash_after = crash_after  # raise (a simulated crash) on the run after this many
        self.calls: list[str] = []
        self.finished: list[dict | None] = []
        self.summary: dict | None = None

    def settings_key(self) -> dict:
        return {"runner": "fake"}

    def run(self, sample, trajectory, run_dir, device) -> SceneOutput:
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise RuntimeError(f"simulated crash before {sample.scene_id}")
        self.calls.append(sample.scene_id)
        return SceneOutput(refined=0.8 * sample.target_video + 0.1, anchor=sample.input_video,
                           anchor_mask=torch.ones_like(sample.occluded_mask), timings={"fit_s": 0.0})

    def finish(self, metrics) -> None:
        self.finished.append(metrics)

    def log_summary(self, metrics, table) -> None:
        self.summary = metrics


# ---------------------------------------------------------------------------- scene lists, ranks
def test_scene_lists_and_explicit_ids() -> None:
    test100 = resolve_scene_ids("test100")
    assert len(test100) == 100 and test100[0] == "scn02900" and test100[-1] == "scn02999"
    assert resolve_scene_ids("test50") == test100[:50]
    assert resolve_scene_ids("test20") == test100[:20]
    assert resolve_scene_ids("kubric-mini", MiniScenes(num_scenes=3)) == ["scn02900", "scn02901", "scn02902"]
    assert resolve_scene_ids("2917, scn02900,2917") == ["scn02917", "scn02900"]
    assert resolve_scene_ids(["scn02901", 2902]) == ["scn02901", "scn02902"]
    with pytest.raises(RecaptureError, match="test100"):
        resolve_scene_ids("test1000")


def test_shards_cover_every_scene_once() -> None:
    ids = resolve_scene_ids("test20")
    for world in (1, 2, 3, 8):
        parts = [shard(ids, r, world) for r in range(world)]
        assert sorted(s for p in parts for s in p) == sorted(ids)
        assert parts[0][:2] == ids[0 : 2 * world : world]


def test_dist_info_from_launchers() -> None:
    assert dist_info({}) == DistInfo(0, 1, 0, "single")
    assert dist_info({"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1"}) == DistInfo(5, 16, 1, "torchrun")
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "3"}
    assert dist_info(slurm) == DistInfo(3, 4, 3, "slurm")
    # torchrun inside a SLURM allocation: torchrun's variables win
    assert dist_info({**slurm, "RANK": "0", "WORLD_SIZE": "2"}).launcher == "torchrun"
    with pytest.raises(RecaptureError, match="rank=4"):
        dist_info({"RANK": "4", "WORLD_SIZE": "4"})


def test_output_dir_is_per_trial_under_a_wandb_sweep() -> None:
    s = BenchmarkSettings(output="runs/x")
    assert output_dir(s, {}) == Path("runs/x")
    assert output_dir(s, {"WANDB_SWEEP_ID": "abc", "WANDB_RUN_ID": "r1"}) == Path("runs/x/r1")


def test_a_rerun_with_nothing_new_logs_no_second_summary(mini_root: Path, tmp_path: Path) -> None:
    """W&B gets one summary run per distinct aggregate: a rerun that only skips finished scenes adds none."""
    out = tmp_path / "out"
    settings = _settings(mini_root, out, max_scenes=2)
    runner = FakeRunner()
    first = run_sweep(settings, runner, DistInfo(0, 1))
    assert runner.summary == first["eval"]
    rerun = FakeRunner()
    assert run_sweep(settings, rerun, DistInfo(0, 1))["eval"] == first["eval"]
    assert rerun.calls == [] and rerun.summary is None  # nothing evaluated, nothing logged
    more = FakeRunner()  # a third scene changes the aggregate: it is logged
    third = run_sweep(_settings(mini_root, out, max_scenes=3), more, DistInfo(0, 1))
    assert more.calls == ["scn02902"] and more.summary == third["eval"]


# ---------------------------------------------------------------------------- trajectory and scores
def test_sample_trajectory_renders_the_protocol_cameras(mini_root: Path) -> None:
    """In scene units, and `build_anchor` scales it back to exactly the protocol's target cameras."""
    from recapture.anchor import AnchorConfig, build_anchor
    from recapture.depth import TensorDepth

    sample = make_eval_sample(load_scene(mini_root, "scn02901"), resolution=(64, 96), settings=PROTOCOL)
    trajectory = sample_trajectory(sample)
    assert trajectory.intrinsics is None  # the target camera keeps the source K
    scale = float(sample.input_depth[0][sample.input_depth[0] > 0].median())
    assert torch.allclose(trajectory.c2w[:, :3, 3] * scale, sample.relative_c2w[:, :3, 3], atol=1e-5)
    result = build_anchor(sample.input_video, sample.fps, TensorDepth(sample.input_depth), trajectory,
                          AnchorConfig(cache_dir=None, progress=False, min_coverage=0.0), K=sample.K)
    assert torch.allclose(result.c2w.float(), sample.relative_c2w, atol=1e-5)
    assert result.scene_scale == pytest.approx(scale)


def test_score_video_analytic() -> None:
    """A constant error of 0.1 is 20 dB; an empty region is undefined; an identical frame is left out of PSNR."""
    g = torch.Generator().manual_seed(0)
    target = 0.2 + 0.6 * torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64)
    pred = target + 0.1
    occluded = torch.zeros(3, 1, 32, 32, dtype=torch.float64)
    occluded[1, :, 8:24, 8:24] = 1
    s = score_video(pred, target, occluded)
    assert s["psnr"] == pytest.approx(20.0, abs=1e-6)
    assert s["psnr_occ"] == pytest.approx(20.0, abs=1e-6)  # frames 0 and 2 have no occluded pixel: skipped
    assert s["lpips"] is None and s["lpips_occ"] is None
    assert score_video(pred, target, torch.zeros_like(occluded))["psnr_occ"] is None
    pred[0] = target[0]  # gradual mode: the input's first frame IS the target's
    assert score_video(pred, target, occluded)["psnr"] == pytest.approx(20.0, abs=1e-6)
    exact = score_video(target, target, occluded)  # video_psnr gives inf; JSON has none: null (json_score)
    assert exact["psnr"] is None and exact["psnr_occ"] is None
    with pytest.raises(RecaptureError, match="occluded"):
        score_video(pred, target, occluded[:, :, :16])


def test_score_video_lpips_when_a_model_is_given() -> None:
    from recapture.metrics import LPIPS, video_lpips

    model = LPIPS().eval()  # random weights: only the plumbing is tested here
    target = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    occluded = torch.zeros(2, 1, 64, 64)
    occluded[:, :, :, :32] = 1
    same = score_video(target, target, occluded, model)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6) and same["lpips_occ"] == pytest.approx(0.0, abs=1e-6)
    other = score_video(target.flip(-1), target, occluded, model)
    for key, mask in (("lpips", None), ("lpips_occ", occluded), ("lpips_vis", 1 - occluded)):
        expected = float(video_lpips(model, target.flip(-1), target, mask))
        assert abs(expected) > 1e-6 and other[key] == pytest.approx(expected), key


# ---------------------------------------------------------------------------- sweep engine, in process
def _scene_jsons(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "scenes").glob("scn*.json"))}


def test_sweep_resumes_shards_and_aggregates(mini_root: Path, tmp_path: Path) -> None:
    """Crash after one scene, rerun: nothing redone; ranks of a 2-process launch; aggregate = mean of the JSONs."""
    out = tmp_path / "out"
    runner = FakeRunner(crash_after=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sweep(_settings(mini_root, out), runner, DistInfo(0, 1))
    first = out / "scenes" / "scn02900.json"
    assert runner.calls == ["scn02900"] and list(_scene_jsons(out)) == ["scn02900"]
    runner.crash_after = None
    stamp = first.stat().st_mtime_ns

    # rank 0 of 2: its shard is scn02900 (done) and scn02902; rank 1 has not run, so two scenes are missing
    summary = run_sweep(_settings(mini_root, out), runner, DistInfo(0, 2))
    assert runner.calls == ["scn02900", "scn02902"]
    assert first.stat().st_mtime_ns == stamp
    assert summary["missing"] == ["scn02901", "scn02903"]
    assert "Missing 2 scene(s)" in (out / "results.md").read_text()
    assert run_sweep(_settings(mini_root, out), runner, DistInfo(1, 2)) is None  # only rank 0 aggregates
    assert runner.calls == ["scn02900", "scn02902", "scn02901", "scn02903"]
    summary = run_sweep(_settings(mini_root, out, aggregate_only=True), runner, DistInfo(0, 2))
    assert runner.calls == ["scn02900", "scn02902", "scn02901", "scn02903"]  # every scene exactly once

    records = _scene_jsons(out)
    assert sorted(records) == resolve_scene_ids("kubric-mini", MINI) and summary["missing"] == []
    assert [records[s]["rank"] for s in sorted(records)] == [0, 1, 0, 1]
    assert all(r["controls_source"] == "fallback-sampler" for r in records.values())
    for metric in ("psnr", "ssim", "psnr_occ", "ssim_occ"):
        values = [r["metrics"]["recapture"][metric] for r in records.values()]
        assert summary["eval"][f"eval/{metric}"] == pytest.approx(sum(values) / len(values))
        anchor = [r["metrics"]["anchor"][metric] for r in records.values()]
        assert summary["eval"][f"eval/anchor/{metric}"] == pytest.approx(sum(anchor) / len(anchor))
    assert runner.summary == summary["eval"]
    # the anchor baseline is the input video here: both rows must agree
    assert summary["eval"]["eval/anchor/psnr"] == pytest.approx(summary["eval"]["eval/input/psnr"])

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 3 and {r["method"] for r in rows} == {"input", "anchor", "recapture"}
    row = next(r for r in rows if r["scene"] == "scn02903" and r["method"] == "recapture")
    assert float(row["psnr"]) == pytest.approx(records["scn02903"]["metrics"]["recapture"]["psnr"])
    assert row["lpips"] == ""
    table = (out / "results.md").read_text()
    for label in ("Input video (baseline)", "Anchor video (baseline, no fine-tuning)", "ReCapture (refined)",
                  "GCD (paper, Table 2; reference)", "LPIPS skipped", "fallback sampler"):
        assert label in table
    assert f"{PAPER_TABLE2['ReCapture']['psnr']:.2f}" in table
    assert f"{summary['eval']['eval/psnr']:.2f}" in table

    # results made with other settings are refused rather than mixed in
    with pytest.raises(RecaptureError, match="other settings"):
        run_sweep(_settings(mini_root, out, mode="direct"), runner, DistInfo(0, 1))


def _gloo_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        runner = FakeRunner()
        summary = run_sweep(_settings(Path(root), Path(out)), runner)
        Path(out, f"calls_{rank}.json").write_text(json.dumps({"calls": runner.calls, "summary": summary is not None}))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes with a gloo group: ~12-21 s
def test_two_gloo_processes_barrier_then_rank0_aggregates(mini_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    torch.multiprocessing.spawn(_gloo_worker, args=(2, _free_port(), str(mini_root), str(out)), nprocs=2)
    calls = [json.loads((out / f"calls_{r}.json").read_text()) for r in range(2)]
    assert calls[0] == {"calls": ["scn02900", "scn02902"], "summary": True}
    assert calls[1] == {"calls": ["scn02901", "scn02903"], "summary": False}
    assert json.loads((out / "results.json").read_text())["num_scenes"] == 4


# ---------------------------------------------------------------------------- configs and CLI
@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """Run `recapture benchmark` up to the benchmark itself and capture what it would get."""
    import recapture.training.scene_runner as fit

    got: dict = {}

    def fake(trainer, settings):
        got.update(trainer=trainer, settings=settings, config=trainer.benchmark_source.config)
        return None

    monkeypatch.setattr(fit, "run_benchmark", fake)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return got


def test_benchmark_configs_parse(captured: dict) -> None:
    from recapture.cli import cli_main

    cli_main(["benchmark", "--config", str(KUBRIC4D_CONFIG)])
    s, cfg = captured["settings"], captured["config"]
    assert (s.scenes, s.mode, s.resolution, s.depth_source, s.baselines) == ("test100", "gradual", "recapture", "gt", True)
    assert s.protocol.num_frames == 14
    assert cfg.model.components.pretrained.startswith("stabilityai/stable-video-diffusion")
    assert cfg.model.lora.rank == 16 and cfg.trainer.max_steps == 400

    cli_main(["benchmark", "--config", str(MINI_CONFIG), "--kubric.scenes", "scn02900,scn02903"])
    s, cfg = captured["settings"], captured["config"]
    assert cfg.model.components.tiny is True and s.resolution == (64, 96)
    assert resolve_scene_ids(s.scenes) == ["scn02900", "scn02903"]
    r, (h, w) = s.protocol.render_size, s.mini.size
    assert r[1] / r[0] == pytest.approx(1.5) and r[0] <= h and r[1] <= w  # render below the views' size

    cli_main(["benchmark", "--config", str(PRIOR_CONFIG)])
    s, cfg = captured["settings"], captured["config"]
    assert cfg.model.components.pretrained == "recapture-tiny" and not cfg.model.components.tiny
    assert s.ablation is True and s.resolution == (64, 96) and s.protocol.num_frames == 8


def test_benchmark_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from recapture.cli import cli_main

    cli_main(["--help"])
    assert "  benchmark" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["benchmark", "--help"])
    out = capsys.readouterr().out
    for flag in ("root", "scenes", "controls", "mode", "resolution", "output", "depth_source", "baselines",
                 "wandb_group", "max_scenes", "protocol.num_frames"):
        assert f"--kubric.{flag}" in out, flag


def test_sweep_yaml_structure_and_overrides(captured: dict) -> None:
    """A valid W&B sweep whose ${args} overrides are flags `recapture benchmark` accepts."""
    from recapture.cli import cli_main

    sweep = yaml.safe_load(SWEEP_CONFIG.read_text())
    assert sweep["method"] in ("bayes", "random")
    assert sweep["metric"] == {"name": "eval/psnr", "goal": "maximize"}
    assert sweep["program"] == "recapture"
    command = sweep["command"]
    assert command[:3] == ["${env}", "${program}", "benchmark"] and command[-1] == "${args}"
    config = command[command.index("--config") + 1]
    assert (REPO / config).resolve() == MINI_CONFIG
    params = sweep["parameters"]
    assert {"model.optimizer.init_args.lr", "model.lora.rank", "trainer.max_steps", "model.refine.strength"} <= set(params)
    for name, spec in params.items():
        if "values" in spec:
            value = spec["values"][-1]
        else:
            assert spec["distribution"] in ("uniform", "log_uniform_values", "int_uniform", "q_uniform")
            assert spec["min"] < spec["max"]
            value = spec["max"]
        # what the agent's ${args} expands to: --name=value
        cli_main(["benchmark", "--config", str(MINI_CONFIG), *command[5:-1], f"--{name}={value}"])
        node = captured["config"]
        for part in name.split("."):
            node = node[part]
        assert node == value, name
        assert captured["settings"].output == "runs/kubric_mini_sweep"


def _small_args(root: Path, out: Path, cache: Path) -> list[str]:
    return [
        "--config", str(MINI_CONFIG),
        "--kubric.root", str(root), "--kubric.output", str(out),
        "--kubric.mini.num_frames", str(MINI.num_frames), "--kubric.mini.size", "[64, 96]",
        "--kubric.mini.supersample", "1", "--kubric.resolution", "[64, 96]",
        "--kubric.protocol.num_frames", "4", "--kubric.protocol.render_size", "[56, 84]",
        "--trainer.max_steps", "2", "--model.sampling.num_inference_steps", "2",
        "--model.refine.num_inference_steps", "2",
        "--data.latent_cache_dir", str(cache / "latents"), "--data.anchor.cache_dir", str(cache / "anchors"),
    ]


def test_benchmark_command_in_process(mini_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recapture benchmark` on one scene: a real (tiny) fine-tuning run, its outputs and the aggregate."""
    from recapture.cli import cli_main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    cli = cli_main(["benchmark", *_small_args(mini_root, out, tmp_path / "cache"), "--kubric.max_scenes", "1",
                    "--trainer.logger", "false"])
    summary = cli.trainer.command_result
    assert summary["num_scenes"] == 1 and summary["missing"] == []
    record = json.loads((out / "scenes" / "scn02900.json").read_text())
    assert record["info"]["global_step"] == 2 and record["info"]["depth_source"] == "gt"
    assert summary["eval"]["eval/psnr"] == pytest.approx(record["metrics"]["recapture"]["psnr"])
    # the video before SDEdit is scored in every benchmark (not only the ablation), as its own row
    assert set(record["metrics"]) == {"input", "anchor", "generated", "recapture"}
    assert record["metrics"]["generated"]["psnr"] != record["metrics"]["recapture"]["psnr"]
    table = (out / "results.md").read_text()
    assert "| ReCapture before SDEdit (both LoRAs, generated) |" in table and "++ spatial" not in table
    for name in ("anchor.mp4", "generated.mp4", "refined.mp4", "eval.mp4", "report.json"):
        assert (out / "runs" / "scn02900" / name).is_file(), name
    assert (out / "config.yaml").is_file() and not list(out.rglob("*.partial*"))


# ---------------------------------------------------------------------------- end to end, two processes
def _launch(rank: int, world: int, args: list[str], cwd: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1",  # the caller's own PYTHONPATH kept (packages may live there)
           "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-m", "recapture.cli", "benchmark", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_two_ranks(args: list[str], cwd: Path) -> tuple[list[int], str]:
    port = _free_port()
    procs = [_launch(r, 2, args, cwd, port) for r in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    return [p.returncode for p in procs], "\n".join(outputs)


@pytest.mark.slow
def test_two_process_benchmark_crash_and_resume(mini_root: Path, tmp_path: Path) -> None:
    """Tiny model, 4 scenes, 2 ranks: each rank crashes after one scene; the rerun finishes the rest only."""
    out = tmp_path / "bench"
    args = [*_small_args(mini_root, out, tmp_path / "cache"), "--kubric.wandb_group", "sweep-test",
            "--kubric.save_videos", "false", "--kubric.wait_timeout_s", "600"]
    # each process crashes at its second scene (tests/benchmark/crash_callback.py)
    crash = ["--trainer.callbacks+=crash_callback.CrashAfterOwnScenes",
             "--trainer.callbacks.scenes_dir", str(out / "scenes")]
    codes, log1 = _run_two_ranks([*args, *crash], tmp_path)
    assert all(c != 0 for c in codes), log1
    assert "simulated crash" in log1
    first = _scene_jsons(out)
    assert sorted(first) == ["scn02900", "scn02901"], log1
    stamps = {s: (out / "scenes" / f"{s}.json").stat().st_mtime_ns for s in first}

    codes, log2 = _run_two_ranks(args, tmp_path)
    assert codes == [0, 0], log2
    records = _scene_jsons(out)
    assert sorted(records) == ["scn02900", "scn02901", "scn02902", "scn02903"]
    assert {s: (out / "scenes" / f"{s}.json").stat().st_mtime_ns for s in first} == stamps  # not redone
    assert "scn02900: done already, skipped" in log2 and "scn02901: done already, skipped" in log2
    for scene in records:  # each scene evaluated exactly once over both launches, on its shard's rank
        assert (log1 + log2).count(f"{scene}: protocol") == 1, scene
        assert records[scene]["rank"] == int(scene[-1]) % 2 and records[scene]["world_size"] == 2
        assert records[scene]["info"]["global_step"] == 2
        assert (out / "runs" / scene / "refined.mp4").is_file()

    summary = json.loads((out / "results.json").read_text())
    assert summary["num_scenes"] == 4 and summary["missing"] == []
    for metric in ("psnr", "ssim", "psnr_occ", "ssim_occ"):
        values = [r["metrics"]["recapture"][metric] for r in records.values()]
        assert math.isclose(summary["eval"][f"eval/{metric}"], sum(values) / len(values), rel_tol=1e-12)
    assert (out / "results.md").is_file() and (out / "results.csv").is_file()

    # W&B (offline): one run per scene in the sweep's group, plus rank 0's summary run
    runs = [next(d.glob("run-*.wandb")).read_bytes() for d in (tmp_path / "wandb").glob("offline-run-*")]
    assert len(runs) == 4 + 1
    assert all(b"sweep-test" in r for r in runs)
    for scene in records:
        assert sum(scene.encode() in r for r in runs) == 1, scene


def test_benchmark_ablation_rows(mini_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kubric.ablation`: the Table 3 rows and both baselines are scored, each from its own video."""
    from recapture.benchmark.results import METHODS
    from recapture.cli import cli_main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    cli = cli_main(["benchmark", *_small_args(mini_root, out, tmp_path / "cache"), "--kubric.max_scenes", "1",
                    "--trainer.logger", "false", "--kubric.ablation", "true"])
    record = json.loads((out / "scenes" / "scn02900.json").read_text())
    rows = record["metrics"]
    assert list(rows) == [m for m in METHODS if m in rows]
    assert set(rows) == set(METHODS)  # every method, the ablation rows included
    # each row is its own video: no two methods score the same
    psnrs = {m: rows[m]["psnr"] for m in ("anchor", "inpaint", "prior", "temporal", "generated", "recapture")}
    assert len({round(v, 6) for v in psnrs.values()}) == len(psnrs), psnrs
    assert rows["target"]["ssim"] == pytest.approx(1.0) and 0 < rows["target"]["flicker"] <= 1
    # inpainting keeps the anchor's valid pixels and only fills holes: it is at least as close as the anchor
    assert rows["inpaint"]["psnr"] >= rows["anchor"]["psnr"] - 0.05
    temporal = out / "runs" / "scn02900" / "ablation"
    for name in ("inpaint.mp4", "prior.mp4", "temporal/generated.mp4"):
        assert (temporal / name).is_file(), name
    assert not (temporal / "temporal" / "refined.mp4").exists()  # the temporal-only fit is not refined
    table = (out / "results.md").read_text()
    assert "+ temporal LoRA with mask" in table and "+++ SDEdit" in table and "Flicker" in table
    assert "| ++ spatial LoRA (both LoRAs, before SDEdit) |" in table
    assert cli.trainer.command_result["means"]["temporal"]["psnr"]["n"] == 1


@pytest.mark.parametrize("run_id", ["../../escape", "/abs/path", "a/b", "..", "", "x" * 65])
def test_sweep_run_id_never_leaves_the_output_folder(run_id: str, tmp_path: Path) -> None:
    settings = BenchmarkSettings(output=str(tmp_path / "out"))
    env = {"WANDB_SWEEP_ID": "s1", "WANDB_RUN_ID": run_id}
    if not run_id:  # an empty id is "no id": the plain output folder
        assert output_dir(settings, env) == tmp_path / "out"
        return
    with pytest.raises(RecaptureError, match="WANDB_RUN_ID"):
        output_dir(settings, env)
    assert output_dir(settings, {"WANDB_SWEEP_ID": "s1", "WANDB_RUN_ID": "ab12cd34"}) == tmp_path / "out" / "ab12cd34"


def _retrained_copy(tmp_path: Path) -> Path:
    """A copy of the shipped prior whose VAE has one weight changed (a retrained prior, same name)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from recapture.hub import ASSETS

    copy = tmp_path / "my-prior"
    shutil.copytree(ASSETS / "recapture-tiny", copy)
    path = copy / "vae" / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1.0
    save_file(weights, path, metadata={"format": "pt"})
    return copy


def test_the_settings_key_changes_with_the_prior_weights(captured: dict, tmp_path: Path) -> None:
    """Scenes scored with one prior are not reused for another under the same path or config."""
    from recapture.cli import cli_main
    from recapture.training.scene_runner import LightningSceneRunner, _resolve_scene_models

    def key(*overrides: str) -> str:
        cli_main(["benchmark", "--config", str(PRIOR_CONFIG), *overrides])
        source, settings = captured["trainer"].benchmark_source, captured["settings"]
        weights = _resolve_scene_models(source.parser, source.config, settings)
        runner = LightningSceneRunner(source.parser, source.config, type(captured["trainer"]), settings, "g", weights)
        return settings_key(settings, runner.settings_key())

    copy = _retrained_copy(tmp_path)
    shipped, retrained = key(), key("--model.components.pretrained", str(copy))
    assert shipped != retrained
    import shutil

    from recapture.hub import ASSETS

    for part in ("vae", "unet"):  # the same folder with the shipped weights again: the shipped key
        shutil.copyfile(ASSETS / "recapture-tiny" / part / "diffusion_pytorch_model.safetensors",
                        copy / part / "diffusion_pytorch_model.safetensors")
    assert key("--model.components.pretrained", str(copy)) != retrained
    # the tiny random set has no weights to hash (its seed is in model:), ground-truth depth neither
    cli_main(["benchmark", "--config", str(MINI_CONFIG)])
    assert _resolve_scene_models(captured["trainer"].benchmark_source.parser,
                                 captured["trainer"].benchmark_source.config, captured["settings"]) is None
    # a depth model is fingerprinted too (depth_source: model): other weights under the same path, another key
    depth = tmp_path / "depth-model"
    depth.mkdir()
    (depth / "config.json").write_text("{}")

    def depth_key(weights: bytes) -> dict:
        (depth / "model.safetensors").write_bytes(weights)
        cli_main(["benchmark", "--config", str(MINI_CONFIG), "--kubric.depth_source", "model",
                  "--data.depth", "TransformersDepthSource", "--data.depth.model", str(depth)])
        source = captured["trainer"].benchmark_source
        return _resolve_scene_models(source.parser, source.config, captured["settings"])

    first, second = depth_key(b"\x00" * 8), depth_key(b"\x01" * 8)
    assert set(first) == {"depth"} and first != second
