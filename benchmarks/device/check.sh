#!/usr/bin/env bash
# The GPU goals of issue 13 (point 5) on a lent GPU machine, in one call of the device tool:
#
#     bash benchmarks/device/make_kit.sh                       # here, once: .devkit/site.tar.xz
#     run(command="bash benchmarks/device/check.sh steps", carry=[".devkit"], timeout_s=420)
#     run(command="bash benchmarks/device/check.sh orbit", carry=[".devkit"], timeout_s=600)
#
# Modes (each stage has its own time limit, so a slow stage cannot eat the next one's results):
#   env     the import check and versions only (seconds)
#   steps   full-size training step, temporal and spatial: 14x576x1024 with gradient checkpointing
#           (goal <= 0.30 s, <= 24 GB) and 14x256x384 (goal <= 0.05 s); 25-step CFG sampling at
#           14x576x1024 (goal <= 20 s)
#   orbit   `configs/orbit.yaml` end to end at 1024x576, 400 steps (goal <= 5 min): gpu_check.py
#   compile the 14x576x1024 step eager and through torch.compile (model.compile_unet's effect)
#   small   gpu_check.py at its default size (384x256, 20 steps): the recipe runs at all
#   tests   the GPU-marked tests
#
# Everything goes under $OUT (the device tool brings it back, also after a timeout): one log and
# one Markdown table per stage, versions.txt, gpu.txt and stages.txt (each stage's exit status and
# seconds). No pip and no network there: the packages the image lacks come from the kit, extracted
# once per machine into /tmp/recapture-site and put first on PYTHONPATH (RECAPTURE_KIT and
# RECAPTURE_SITE override both paths).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-steps}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
case $mode in env|steps|orbit|compile|small|tests) ;; *)
    echo "check.sh: unknown mode '$mode' (env, steps, orbit, compile, small, tests)" >&2
    exit 2 ;;
esac
kit=${RECAPTURE_KIT:-.devkit/site.tar.xz}
site=${RECAPTURE_SITE:-/tmp/recapture-site}
if [ ! -f "$site/.complete" ]; then
    if [ ! -f "$kit" ]; then
        echo "check.sh: $kit is missing: run benchmarks/device/make_kit.sh here and carry .devkit" >&2
        exit 3
    fi
    # Python's own tarfile/lzma: the image need not have the xz program
    rm -rf "$site" && mkdir -p "$site" && python3 - "$kit" "$site" <<'EOF' && touch "$site/.complete" || exit 3
import sys, tarfile
with tarfile.open(sys.argv[1]) as archive:
    try:
        archive.extractall(sys.argv[2], filter="data")
    except TypeError:  # Python without extraction filters (< 3.11.4): the kit is our own archive
        archive.extractall(sys.argv[2])
EOF
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false

python3 - > "$OUT/versions.txt" 2>&1 <<'EOF'
import importlib, platform, sys
import torch
print("python", sys.version.split()[0], platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB")
for name in ("diffusers", "peft", "transformers", "accelerate", "lightning", "torchmetrics", "kornia", "jsonargparse", "av", "numpy"):
    module = importlib.import_module(name)
    print(name, getattr(module, "__version__", "?"), module.__file__)
import recapture.cli  # noqa: F401  (the whole CLI imports: a missing package shows here)
print("recapture imports")
EOF
status=$?
cat "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
if [ $status -ne 0 ]; then
    echo "check.sh: the import check failed (versions.txt)" >&2
    exit 4
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 40 "$OUT/$name.log"
    echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$OUT/stages.txt"
}

case $mode in
    env) ;;
    steps)
        stage step_576x1024 150 python3 benchmarks/finetune_step.py --sizes 14x576x1024 --grad-checkpointing on \
            --weights-dtype bf16 --steps 10 --warmup 3 --peak-tflops 989 --out "$OUT/step_576x1024.md"
        stage step_256x384 90 python3 benchmarks/finetune_step.py --sizes 14x256x384 --grad-checkpointing both \
            --weights-dtype bf16 --steps 10 --warmup 3 --peak-tflops 989 --no-flops --out "$OUT/step_256x384.md"
        stage sampling_576x1024 150 sh -c "python3 benchmarks/sampling_speed.py --sizes 14x576x1024 --offload off \
            --repeats 1 > '$OUT/sampling_576x1024.md'"
        ;;
    orbit)
        stage orbit_1024 570 python3 benchmarks/gpu_check.py --size 1024 --steps 400 --out "$OUT/orbit_1024.md" ;;
    compile)
        stage compile_576x1024 570 python3 benchmarks/finetune_step.py --sizes 14x576x1024 --grad-checkpointing on \
            --weights-dtype bf16 --compile both --steps 10 --warmup 3 --no-flops --out "$OUT/compile_576x1024.md" ;;
    small)
        stage orbit_384 570 python3 benchmarks/gpu_check.py --out "$OUT/orbit_384.md" ;;
    tests)
        stage gpu_tests 570 python3 -m pytest -q -p no:cacheprovider -m gpu tests ;;
esac
cat "$OUT/stages.txt" 2>/dev/null
! grep -qv " rc=0 " "$OUT/stages.txt" 2>/dev/null
