"""The prior's model card (Markdown) and loss-curve figure, written from the stages' records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recapture.utils import atomic_path

_VAL_KEY = {"vae": "val/psnr", "unet": "val/loss"}


def write_loss_curves(path: Path, stages: list[dict[str, Any]]) -> Path:
    """One panel per stage: training loss per step (log scale) and its validation figure on a second axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 3.6), squeeze=False)
    for ax, record in zip(axes[0], stages, strict=True):
        history = record.get("history") or []
        if history:
            ax.plot([h["step"] for h in history], [h["loss"] for h in history], color="tab:blue", lw=1.2)
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss", color="tab:blue")
        ax.set_title(f"{record['stage']} stage")
        key = _VAL_KEY.get(record["stage"])
        points = [(v["step"], v[key]) for v in record.get("validation") or [] if key in v]
        if points:
            twin = ax.twinx()
            twin.plot(*zip(*points, strict=True), color="tab:red", marker="o", ms=3, lw=1)
            twin.set_ylabel(f"{key} (held-out)", color="tab:red")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _minutes(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f} min"


def model_card(stages: list[dict[str, Any]], weights: dict[str, str] | None = None) -> str:
    """The Markdown text of the card for the records of all stages (earliest first).

    Args:
        stages: the stages' records.
        weights: sha256 of each weights file (relative path -> hex), listed in the card.
    """
    final = stages[-1]
    parts: dict[str, Any] = {}
    for record in stages:
        parts.update(record.get("parts", {}))
    total = sum(p.get("bytes", 0) for p in parts.values())
    data = final["data"]
    lines = [
        "# recapture prior: a small Stable Video Diffusion trained on procedural scenes",
        "",
        "The real SVD architecture (`UNetSpatioTemporalConditionModel`, `AutoencoderKLTemporalDecoder`,",
        "`CLIPVisionModelWithProjection`, EDM `EulerDiscreteScheduler`) with small numbers, trained from",
        "scratch by `recapture pretrain` on rendered procedural scenes (textured planes, sky, moving",
        "primitives, moving cameras). It is a test-scale prior for the ReCapture pipeline, not a model",
        "of real-world video. Load it with",
        "`recapture.adaptation.load_components(ComponentsConfig(pretrained=<this folder>, variant=None))`",
        "or the stock `StableVideoDiffusionPipeline.from_pretrained(<this folder>)`.",
        "",
        "## Parts",
        "",
        "| part | parameters | size (MB) | notes |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, info in parts.items():
        notes = ", ".join(f"{k}={_fmt(v)}" for k, v in info.items() if k not in ("parameters", "bytes"))
        lines.append(f"| {name} | {info['parameters']:,} | {info.get('bytes', 0) / 1e6:.2f} | {notes} |")
    lines += [
        f"| **total** | {sum(p['parameters'] for p in parts.values()):,} | {total / 1e6:.2f} | float32 safetensors |",
        "",
        *(["The image encoder is a fixed random CLIP (seeded, never trained): see "
           "`recapture.training.pretrain.unet`.", ""] if "image_encoder" in parts else []),
        "## Data",
        "",
        f"Procedural clips (`recapture.data.procedural`, split `train`), {data['num_frames']} frames of "
        f"{data['height']}x{data['width']}, at most {data['max_objects']} moving objects, supersample "
        f"{data['supersample']}. Held-out figures use split `eval` (seeds never shared with training).",
        "",
        "## Training",
        "",
        "| stage | steps | batch x ranks | data | precision | train time | machine |",
        "| --- | ---: | ---: | --- | --- | ---: | --- |",
    ]
    for r in stages:
        d = r["data"]
        seen = f"{d['clips_seen']:,} streamed clips" if "clips_seen" in d else (
            f"pool of {d.get('pool_clips', '?'):,} clips, {d.get('epochs', '?')} epochs")
        lines.append(f"| {r['stage']} | {r['steps']:,} | {r['batch_size']} x {r['world_size']} | {seen} | "
                     f"{r['precision']} | {_minutes(r.get('train_seconds'))} | {r['machine']} |")
    lines += ["", "![loss curves](loss_curves.png)", "", "## Measured figures", "", "| figure | value |",
              "| --- | ---: |"]
    for r in stages:
        for key, value in (r.get("figures") or {}).items():
            lines.append(f"| {r['stage']}: {key} | {_fmt(value)} |")
        for key, value in ((r.get("validation") or [{}])[-1]).items():
            if key != "step":
                lines.append(f"| {r['stage']}: last {key} | {_fmt(value)} |")
    if "sample_psnr_db" in (final.get("figures") or {}):
        steps = final["figures"].get("sample_steps", "?")
        lines += ["", f"Samples from held-out first frames ({steps} Euler steps, guidance 1 -> 3):", "",
                  "![samples](samples.png)"]
    lines += ["", "## Reproduce", ""]
    for r in stages:
        lines += [f"{r['stage']} stage ({r['date']}):", "", "```bash", r["command"], "```", ""]
        if r.get("config"):
            lines += ["<details><summary>resolved config</summary>", "", "```yaml", r["config"].rstrip(), "```",
                      "", "</details>", ""]
    if weights:
        lines += ["## Weights (sha256)", "", "| file | sha256 |", "| --- | --- |"]
        lines += [f"| `{name}` | `{digest}` |" for name, digest in weights.items()]
        lines += [""]
    lines += ["`checksums.json` holds the sha256 of every file of this folder.", ""]
    return "\n".join(lines)


def write_model_card(path: Path, stages: list[dict[str, Any]], weights: dict[str, str] | None = None) -> Path:
    """Write :func:`model_card` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(model_card(stages, weights))
    return path
