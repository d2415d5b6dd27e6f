"""The Kubric-4D sweep runner behind ``recapture benchmark``: scenes, shards, resumable per-scene results.

Per scene: GCD evaluation pair (:func:`~recapture.data.kubric.make_eval_sample`) -> the target
trajectory in scene units (:func:`sample_trajectory`) -> a :class:`SceneRunner` (the Lightning one
fits a fresh ReCapture run: anchor, masked fine-tuning, generation, SDEdit refinement) -> scores of
ReCapture and of the baselines (input video, anchor video) against the ground truth -> one JSON.

Distribution (:mod:`recapture.benchmark.launch`): one process per GPU under ``torchrun``
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) or SLURM (``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``),
or a single process. Rank ``r`` takes ``scenes[r::world]`` and runs each scene on its own device,
single-device (no process group is needed or created). Every scene writes ``<output>/scenes/<scene>.json`` atomically; a rerun skips
scenes whose JSON exists, so a crashed rank loses only the scene in flight. Rank 0 then waits for
the other ranks' files (a ``torch.distributed`` barrier instead when the caller initialised a
process group), and writes ``results.csv``, ``results.md`` and ``results.json``
(:mod:`recapture.benchmark.results`).

Output folder::

    <output>/scenes/scnXXXXX.json    per-scene scores, controls, timings (the resume points)
    <output>/runs/scnXXXXX/          the scene's fine-tuning run (anchor, generated, refined, LoRAs, ...)
    <output>/results.csv results.md results.json
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from recapture.anchor.pipeline import CACHE_VERSION as ANCHOR_VERSION
from recapture.benchmark.launch import DistInfo, dist_info, scene_device, shard, wait_for_scenes
from recapture.benchmark.results import (
    load_scene_results,
    scene_record,
    score_sample,
    write_eval_video,
    write_results,
)
from recapture.benchmark.scenes import (
    KUBRIC_MINI,
    SCENE_LISTS,
    DatasetScenes,
    GeneratedScenes,
    MiniScenes,
    SceneSource,
    make_scene_source,
    resolve_scene_ids,
)
from recapture.cameras import Trajectory
from recapture.data.kubric.controls import read_controls
from recapture.data.kubric.protocol import EvalSample, ProtocolSettings, Resolution, make_eval_sample
from recapture.data.kubric.reader import load_scene
from recapture.depth.base import scene_scale
from recapture.metrics import MetricModels, MetricWeights
from recapture.utils import RecaptureError, atomic_path, check_output_folder, hash_inputs, write_json

log = logging.getLogger(__name__)

__all__ = [
    "KUBRIC_MINI",
    "SCENE_LISTS",
    "BenchmarkSettings",
    "MiniScenes",
    "DatasetScenes",
    "GeneratedScenes",
    "SceneOutput",
    "SceneRunner",
    "SceneSource",
    "scene_source",
    "output_dir",
    "resolve_scene_ids",
    "run_sweep",
    "sample_trajectory",
]

@dataclass
class BenchmarkSettings:
    """What ``recapture benchmark`` evaluates and where the results go (the ``kubric:`` config section).

    Args:
        root: dataset root holding ``scnXXXXX/`` folders (GCD's Kubric-4D release). With
            ``scenes: kubric-mini`` the synthetic scenes are generated here (default
            ``<output>/kubric-mini``).
        scenes: ``test100`` (scn02900-02999), ``test50``, ``test20`` (CogNVS's list), ``kubric-mini``,
            or explicit ids (a list, or comma-separated: ``scn02900,scn02917``).
        controls: GCD's controls JSON (``kubric_valtest_controls_gradual.json``); ``None`` uses the seeded
            fallback sampler, labelled ``fallback-sampler`` in every result (NOT GCD's pairs).
        sample: which sample of the controls file (``0`` -> ``sample_00``).
        mode: ``gradual`` (target moves from the input pose) or ``direct`` (jumps to the end pose).
        resolution: ``recapture`` (384x256), ``cognvs`` (576x384) or ``[H, W]``.
        protocol: GCD protocol knobs (``num_frames`` 14, ``render_size`` 280x420, blur kernels, ...).
        output: output folder. Under a W&B sweep agent (``WANDB_SWEEP_ID`` set) each trial writes to
            ``<output>/<WANDB_RUN_ID>`` so that trials never reuse each other's scene results.
        depth_source: ``gt``: the input view's ground-truth depth; ``model``: the ``data.depth``
            estimator. Either way the target camera is placed with the ground-truth scale (its
            translation in units of the GT median depth of frame 0).
        baselines: also score the input video and the anchor video (no fine-tuning) against the target.
        ablation: also run the paper's Table 3 ablation per scene and score its rows: the anchor
            inpainted per frame by OpenCV (Telea; needs ``pip install 'recapture[benchmark]'``), the
            prior sampled without fine-tuning (same seed and settings, LoRAs off), a second fit with
            the temporal LoRA only (``model.schedule.spatial: 0``, same ``max_steps``), the video
            generated with both LoRAs before SDEdit, and the ground truth's own flickering. Costs
            one more fit and two more samplings per scene.
        wandb_group: W&B group of the per-scene runs (default: the output folder's name).
        max_scenes: evaluate only the first N scenes of the list.
        seed: seed of the fallback sampler and of every scene's training (the same for every scene,
            so results do not depend on which rank ran a scene).
        weights: the metric models' files, the same section as ``evaluate --weights`` and the
            ``MetricsCallback``'s (:class:`~recapture.metrics.MetricWeights`); the benchmark uses
            ``weights.lpips_alexnet`` and ``weights.lpips_lin``, and LPIPS is skipped (with a note in
            the table) unless both are given. ``weights.device`` is ignored: each rank scores on its
            own device.
        mini: how the ``kubric-mini`` scenes are generated.
        save_videos: write ``runs/<scene>/eval.mp4`` (input | target | anchor | ReCapture | occluded).
        wait_timeout_s: how long rank 0 waits for the other ranks' scenes before aggregating what
            exists (the missing ones are listed in the table).
        aggregate_only: run nothing; aggregate the scene results already in ``output``.
    """

    root: str | None = None
    scenes: str | list[str] = "test100"
    controls: str | None = None
    sample: int = 0
    mode: Literal["gradual", "direct"] = "gradual"
    resolution: Resolution = "recapture"
    protocol: ProtocolSettings = field(default_factory=ProtocolSettings)
    output: str = "runs/kubric4d"
    depth_source: Literal["gt", "model"] = "gt"
    baselines: bool = True
    ablation: bool = False
    wandb_group: str | None = None
    max_scenes: int | None = None
    seed: int = 0
    weights: MetricWeights = field(default_factory=MetricWeights)
    mini: MiniScenes = field(default_factory=MiniScenes)
    save_videos: bool = True
    wait_timeout_s: float = 3600.0
    aggregate_only: bool = False


def scene_source(settings: BenchmarkSettings) -> SceneSource:
    """The settings' scene source (:func:`~recapture.benchmark.scenes.make_scene_source`)."""
    return make_scene_source(settings.scenes, settings.root, settings.output, settings.mini)


def output_dir(settings: BenchmarkSettings, env: Mapping[str, str] | None = None) -> Path:
    """The output folder: ``settings.output``, or ``<output>/<WANDB_RUN_ID>`` under a W&B sweep agent."""
    env = os.environ if env is None else env
    out = Path(settings.output)
    if env.get("WANDB_SWEEP_ID") and env.get("WANDB_RUN_ID"):
        run_id = env["WANDB_RUN_ID"]
        # a path component, never a path: W&B ids are [a-z0-9]; anything else is refused
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", run_id):
            raise RecaptureError(
                f"WANDB_RUN_ID={run_id!r} is not a W&B run id (letters, digits, '-' and '_', at most 64): it would "
                f"place the trial's results outside kubric.output={settings.output!r}; unset it or fix the agent"
            )
        out = out / run_id
    return out


def sample_trajectory(sample: EvalSample) -> Trajectory:
    """The sample's target camera as a :class:`Trajectory` in scene units (no intrinsics: the source K).

    ``sample.relative_c2w`` is in metres; its translations are divided by
    :func:`~recapture.depth.base.scene_scale` of the input depth, which
    :func:`~recapture.anchor.build_anchor` multiplies back, so the anchor is rendered from exactly
    the protocol's target cameras.
    """
    c2w = sample.relative_c2w.double().clone()
    c2w[:, :3, 3] /= scene_scale(sample.input_depth)
    return Trajectory(c2w, name=f"kubric-{sample.mode}")


@dataclass
class SceneOutput:
    """What a :class:`SceneRunner` produced for one scene (CPU tensors in [0, 1]).

    Attributes:
        refined: ``(T, 3, H, W)`` ReCapture's final (SDEdit-refined) video.
        anchor: ``(T, 3, H, W)`` the anchor video it was fine-tuned on.
        anchor_mask: ``(T, 1, H, W)`` the anchor's validity mask.
        generated: ``(T, 3, H, W)`` the video before refinement, if available.
        timings: seconds per stage (``fit_s``, ``generate_s``, ``refine_s``, ...).
        info: anything else worth keeping in the scene JSON (coverage, run folder, ...).
        ablation: ``(T, 3, H, W)`` videos of the ablation rows by method (``inpaint``, ``prior``,
            ``temporal``; see :data:`~recapture.benchmark.results.METHODS`), empty unless
            ``kubric.ablation`` is set.
    """

    refined: Tensor
    anchor: Tensor
    anchor_mask: Tensor
    generated: Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    ablation: dict[str, Tensor] = field(default_factory=dict)


class SceneRunner(Protocol):
    """Runs ReCapture on one evaluation sample (the Lightning one: :mod:`recapture.training.scene_runner`)."""

    def settings_key(self) -> Any:
        """JSON-able settings that change results (stored with each scene; a rerun must match)."""

    def run(self, sample: EvalSample, trajectory: Trajectory, run_dir: Path, device: torch.device) -> SceneOutput:
        """Anchor, fine-tune, generate and refine for ``sample`` along ``trajectory``; files go to ``run_dir``."""

    def finish(self, metrics: dict[str, float] | None) -> None:
        """Log the scene's flat ``eval/...`` metrics (``None`` after a failure) and close its loggers."""

    def log_summary(self, metrics: dict[str, float], table: list[dict[str, Any]]) -> None:
        """Rank 0: log the aggregate ``eval/...`` metrics and the per-method table."""


def settings_key(settings: BenchmarkSettings, runner_key: Any, source: SceneSource | None = None) -> str:
    """Hash of everything that changes a scene's result; scene JSONs from other settings are refused.

    The anchor renderer's version is part of it: a rerun after the renderer changed its outputs
    starts over instead of mixing scenes rendered both ways."""
    controls = Path(settings.controls) if settings.controls else None  # hashed by content
    resolution = settings.resolution if isinstance(settings.resolution, str) else list(settings.resolution)
    source = source or scene_source(settings)
    return hash_inputs(
        asdict(settings.protocol), settings.mode, resolution, controls, settings.sample, settings.seed,
        settings.depth_source, source.key(), runner_key, *(["ablation"] if settings.ablation else []),
        ANCHOR_VERSION,
    )


def _flat_metrics(scores: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """``eval/<metric>`` for ReCapture, ``eval/<method>/<metric>`` for the baselines (None dropped)."""
    flat = {}
    for method, values in scores.items():
        prefix = "eval/" if method == "recapture" else f"eval/{method}/"
        flat.update({prefix + k: float(v) for k, v in values.items() if v is not None})
    return flat


def _evaluate_scene(
    scene_id: str,
    settings: BenchmarkSettings,
    runner: SceneRunner,
    source: SceneSource,
    out: Path,
    device: torch.device,
    controls: Any,
    lpips: Any,
) -> tuple[dict[str, Any], dict[str, float]]:
    t0 = time.perf_counter()
    scene = load_scene(source.prepare(scene_id), scene_id)
    sample = make_eval_sample(
        scene, controls, settings.mode, settings.resolution, settings.seed, settings.protocol, settings.sample, device
    )
    t_protocol = time.perf_counter() - t0
    run_dir = out / "runs" / scene_id
    output = runner.run(sample, sample_trajectory(sample), run_dir, device)
    t1 = time.perf_counter()
    scores = score_sample(sample, output, lpips, settings.baselines)
    if settings.save_videos:
        write_eval_video(run_dir / "eval.mp4", sample, output)
    timings = {"protocol_s": t_protocol, **output.timings, "metrics_s": time.perf_counter() - t1}
    timings["total_s"] = time.perf_counter() - t0
    return scene_record(sample, output, scores, timings), _flat_metrics(scores)


def _progress(dist: DistInfo, i: int, n: int, scene_id: str, record: dict[str, Any]) -> str:
    t = record["timings_s"]
    s = record["metrics"]
    parts = [f"{k.removesuffix('_s')} {t[k]:.1f}s" for k in ("protocol_s", "fit_s", "generate_s", "refine_s",
                                                            "metrics_s", "total_s") if t.get(k) is not None]
    def db(method: str) -> str:
        value = s[method]["psnr"]
        return "n/a" if value is None else f"{value:.2f}"

    score = f"PSNR {db('recapture')}" + (f" (anchor {db('anchor')}, input {db('input')})" if "anchor" in s else "")
    return f"[rank {dist.rank}/{dist.world_size}] {i}/{n} {scene_id}: " + ", ".join(parts) + f" | {score}"


def _load_lpips(settings: BenchmarkSettings, device: torch.device) -> Any:
    if MetricModels(settings.weights).unset("lpips"):
        return None
    return MetricModels(replace(settings.weights, device=str(device))).get("lpips")


def run_shard(
    settings: BenchmarkSettings,
    runner: SceneRunner,
    scene_ids: Sequence[str],
    dist: DistInfo,
    out: Path,
    key: str,
    device: torch.device,
    source: SceneSource | None = None,
) -> list[str]:
    """Evaluate this rank's scenes on ``device``, skipping finished ones; return the scenes evaluated now."""
    mine = shard(scene_ids, dist.rank, dist.world_size)
    controls = read_controls(settings.controls) if settings.controls else None
    source = source or scene_source(settings)
    source.check()
    lpips = _load_lpips(settings, device)
    done: list[str] = []
    for i, scene_id in enumerate(mine, 1):
        path = out / "scenes" / f"{scene_id}.json"
        existing = load_scene_results(out, [scene_id])[0]
        if existing:
            if existing[0].get("settings_key") != key:
                raise RecaptureError(
                    f"{path} was written with other settings (settings_key {existing[0].get('settings_key')} != {key}); "
                    "use another kubric.output, or delete its scenes/ folder to start over"
                )
            print(f"[rank {dist.rank}/{dist.world_size}] {i}/{len(mine)} {scene_id}: done already, skipped", flush=True)
            continue
        metrics = None
        try:
            record, metrics = _evaluate_scene(scene_id, settings, runner, source, out, device, controls, lpips)
            record.update(settings_key=key, rank=dist.rank, world_size=dist.world_size, launcher=dist.launcher)
            write_json(path, record)
        finally:
            runner.finish(metrics)
        done.append(scene_id)
        print(_progress(dist, i, len(mine), scene_id, record), flush=True)
    return done


SUMMARY_LOGGED = ".summary_logged"  # digest of the last aggregate given to runner.log_summary


def run_sweep(
    settings: BenchmarkSettings,
    runner: SceneRunner,
    dist: DistInfo | None = None,
    device: torch.device | None = None,
) -> dict[str, Any] | None:
    """Run this rank's shard of the benchmark, then (rank 0) aggregate every scene's result.

    Args:
        settings: what to evaluate and where.
        runner: runs ReCapture on one sample.
        dist: rank and world size (default: from the environment, :func:`dist_info`).
        device: where this rank works (default ``cuda:<local_rank>`` when CUDA is available, else the CPU).

    Returns:
        On rank 0 the aggregate (``results.json``'s content); ``None`` on other ranks.
    """
    dist = dist or dist_info()
    out = check_output_folder(output_dir(settings), "--kubric.output", what="benchmark folder")
    source = scene_source(settings)
    scene_ids = source.scene_ids()
    if settings.max_scenes is not None:
        if settings.max_scenes < 1:
            raise RecaptureError(f"kubric.max_scenes must be >= 1 or null, got {settings.max_scenes}")
        scene_ids = scene_ids[: settings.max_scenes]
    key = settings_key(settings, runner.settings_key(), source)
    if not settings.aggregate_only:
        run_shard(settings, runner, scene_ids, dist, out, key, device or scene_device(dist.local_rank), source)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    elif dist.world_size > 1 and dist.rank == 0 and not settings.aggregate_only:
        wait_for_scenes(out, scene_ids, settings.wait_timeout_s)
    if dist.rank != 0:
        return None
    summary = write_results(out, scene_ids, settings_dict(settings), lpips=_lpips_note(settings))
    logged = out / SUMMARY_LOGGED
    digest = hash_inputs(summary["eval"], summary["table"])
    if logged.is_file() and logged.read_text().strip() == digest:
        # a rerun that evaluated nothing new: no second, identical summary run in W&B
        print("[rank 0] results unchanged since they were last logged: summary not logged again", flush=True)
    else:
        runner.log_summary(summary["eval"], summary["table"])
        with atomic_path(logged) as tmp:
            tmp.write_text(digest + "\n")
    print(f"[rank 0] {summary['num_scenes']}/{len(scene_ids)} scenes -> {out / 'results.md'}", flush=True)
    return summary


def settings_dict(settings: BenchmarkSettings) -> dict[str, Any]:
    """The settings as JSON-able values, for the results files."""
    return asdict(settings)


def _lpips_note(settings: BenchmarkSettings) -> str | None:
    unset = MetricModels(settings.weights).unset("lpips")
    if not unset:
        return None
    return f"LPIPS skipped: no weights configured (set {' and '.join('kubric.weights.' + f for f in unset)})"
