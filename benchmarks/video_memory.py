"""Peak memory (RSS) of reading videos and of ``recapture evaluate``, as a Markdown table.

    python benchmarks/video_memory.py                       # make the clips in a temp dir, run every case
    python benchmarks/video_memory.py --clips /tmp/clips    # keep (and reuse) the clips there
    python benchmarks/video_memory.py --pythonpath /tmp/head --label before   # another checkout

The clips are generated here, not downloaded: a 10 s 1280x720 30 fps H.264 clip (the target of
the evaluate cases), its first 14 frames (the prediction) and a 1 s 3840x2160 clip. The frames
are a moving colour pattern with fine texture, so the encoder and decoder do real work.

Every case runs in a fresh Python subprocess (so earlier cases cannot raise its peak) that
reports its own ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the work is done; the
``import`` row is the floor every case pays (Python, torch, the recapture imports).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 30
CLIPS = {  # name -> (frames, height, width)
    "target_720p_10s.mp4": (10 * FPS, 720, 1280),
    "pred_720p_14f.mp4": (14, 720, 1280),
    "clip_4k_1s.mp4": (FPS, 2160, 3840),
}


def pattern_frame(i: int, height: int, width: int) -> np.ndarray:
    """Frame ``i`` of a panning colour pattern with texture, ``(H, W, 3)`` uint8."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :] + 0.004 * i
    texture = np.sin(400.0 * x) * np.sin(300.0 * y)
    channels = (
        0.5 + 0.3 * np.sin(6.0 * x + 0.5 * y) + 0.1 * texture,
        0.5 + 0.3 * np.cos(5.0 * y - 2.0 * x) + 0.1 * texture,
        0.5 + 0.3 * np.sin(3.0 * (x + y)) - 0.1 * texture,
    )
    return (np.clip(np.stack(channels, axis=-1), 0.0, 1.0) * 255).astype(np.uint8)


def write_clip(path: Path, frames: int, height: int, width: int) -> None:
    """Encode ``frames`` pattern frames as H.264 (one frame in memory at a time)."""
    import av

    tmp = path.with_name(path.name + ".part.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, height, width), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.replace(path)


def make_clips(folder: Path) -> dict[str, Path]:
    """The benchmark clips in ``folder``, written unless already there."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (frames, height, width) in CLIPS.items():
        path = folder / name
        if not path.is_file():
            print(f"writing {path} ({frames} frames {width}x{height})", file=sys.stderr)
            write_clip(path, frames, height, width)
        out[name] = path
    return out


def cases(clips: dict[str, Path], out: Path) -> list[tuple[str, str]]:
    """``(command shown in the table, Python code run in the subprocess)`` for every case."""
    target, pred, clip4k = clips["target_720p_10s.mp4"], clips["pred_720p_14f.mp4"], clips["clip_4k_1s.mp4"]

    def evaluate(metrics: str, *extra: str, folder: str) -> list[str]:
        return ["evaluate", "--pred", str(pred), "--target", str(target), "--metrics", metrics,
                "--progress", "false", "--output", str(out / folder), *extra]  # fmt: skip

    def read(path: Path, shape: tuple[int, ...], **kwargs: object) -> str:
        args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        return (
            f"from recapture.io import read_video; v = read_video({str(path)!r}{args}); "
            f"assert tuple(v.frames.shape) == {shape!r}, v.frames.shape"
        )

    shown = "recapture evaluate --pred pred_720p_14f.mp4 --target target_720p_10s.mp4"
    mismatch = (
        "from recapture.cli import cli_main\n"
        "try:\n"
        f"    cli_main({evaluate('psnr,ssim', folder='c')!r})\n"
        "except Exception as err:\n"
        "    assert 'max_frames 14' in str(err), err\n"
        "else:\n"
        "    raise SystemExit('expected the length mismatch error')"
    )
    # what-if: the image metrics scored one frame at a time (they build float64 copies of the
    # whole clip today: ~1.4 GB for PSNR, ~5.5 GB for SSIM of 14 720p frames)
    per_frame = (
        "import torch\n"
        "import recapture.metrics.image as im\n"
        "def one_at_a_time(fn):\n"
        "    def run(pred, target, *args, **kwargs):\n"
        "        p, t = pred.reshape(-1, *pred.shape[-3:]), target.reshape(-1, *target.shape[-3:])\n"
        "        out = [fn(p[i : i + 1], t[i : i + 1], *args, **kwargs) for i in range(p.shape[0])]\n"
        "        return torch.cat(out).reshape(pred.shape[:-3])\n"
        "    return run\n"
        "im.psnr, im.ssim = one_at_a_time(im.psnr), one_at_a_time(im.ssim)\n"
        "from recapture.cli import cli_main\n"
        f"cli_main({evaluate('psnr,ssim', '--max_frames', '14', folder='d')!r})"
    )
    return [
        ("import torch, recapture.io, recapture.commands.evaluate", "import recapture.commands.evaluate"),
        (
            f"{shown} --max_frames 14  # default metrics psnr,ssim",
            f"from recapture.cli import cli_main; cli_main({evaluate('psnr,ssim', '--max_frames', '14', folder='a')!r})",
        ),
        (
            f"{shown} --max_frames 14 --metrics psnr",
            f"from recapture.cli import cli_main; cli_main({evaluate('psnr', '--max_frames', '14', folder='b')!r})",
        ),
        (f"{shown}  # length mismatch error", mismatch),
        ("read_video(target_720p_10s.mp4, num_frames=14)", read(target, (14, 3, 720, 1280), num_frames=14)),
        (
            "read_video(clip_4k_1s.mp4, num_frames=14, size=192)  # -> 14x3x128x192",
            read(clip4k, (14, 3, 128, 192), num_frames=14, size=192),
        ),
        (
            "read_video(clip_4k_1s.mp4, num_frames=14, size=192, backend='decord')",
            read(clip4k, (14, 3, 128, 192), num_frames=14, size=192, backend="decord"),
        ),
        (f"{shown} --max_frames 14  # as 1, PSNR/SSIM patched to go frame by frame (what-if)", per_frame),
    ]


CHILD = """
import resource
{code}
print("PEAK_RSS_KIB=" + str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def run_case(code: str, src: str, cwd: Path) -> tuple[float | None, str]:
    """Run ``code`` in a fresh interpreter importing recapture from ``src``; ``(peak RSS GiB or None, error)``.

    The child runs in ``cwd`` (not the checkout): ``python -c`` puts the working directory first
    on ``sys.path``, which would shadow ``src``.
    """
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    code = f"import recapture; assert recapture.__file__.startswith({src!r}), recapture.__file__\n{code}"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(code=code)], capture_output=True, text=True, env=env, cwd=cwd
    )
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK_RSS_KIB="):
            return int(line.split("=", 1)[1]) / 2**20, ""
    return None, (proc.stderr.strip().splitlines() or ["no output"])[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, default=None, help="folder for the clips (default: a temp dir)")
    parser.add_argument(
        "--pythonpath", default=None, help="checkout to import recapture from (e.g. an old commit)"
    )
    parser.add_argument("--label", default="peak RSS GiB", help="column title")
    parser.add_argument("--only", default=None, help="comma-separated case numbers (0 = import) to run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="video_memory_") as tmp:
        clips = make_clips(args.clips or Path(tmp) / "clips")
        all_cases = cases(clips, Path(tmp) / "out")
        chosen = range(len(all_cases)) if args.only is None else [int(i) for i in args.only.split(",")]
        src = (
            str(Path(args.pythonpath).resolve())
            if args.pythonpath
            else str(Path(__file__).resolve().parents[1])
        )
        head = subprocess.run(
            ["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        print(
            f"`python benchmarks/video_memory.py` — {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, {datetime.date.today()}, code from {src} "
            f"{head.stdout.strip() or '(not a git checkout)'}\n"
        )
        print(f"| # | command | {args.label} |\n|---:|---|---:|")
        for i in chosen:
            command, code = all_cases[i]
            peak, error = run_case(code, src, Path(tmp))
            cell = f"{peak:.2f}" if peak is not None else f"failed: {error}"
            print(f"| {i} | `{command}` | {cell} |", flush=True)


if __name__ == "__main__":
    main()
