#!/usr/bin/env bash
# Build .devkit/site.tar.xz: the Python packages recapture needs that the lent GPU machines' image
# lacks, for Python 3.12 on x86_64 Linux, unpacked and compressed into one archive that travels
# with the working tree (the device tool's `carry`, 64 MiB a call with the repository's ~19 MiB).
#
#     bash benchmarks/device/make_kit.sh          # here, once (needs the package registry; ~3 min)
#
# The image (../.library/device/KINDS.md, read 2026-11-17) has torch 2.11, transformers,
# accelerate, huggingface-hub, safetensors, lightning, torchmetrics, numpy, pillow, matplotlib,
# scipy, tifffile, pyyaml, tqdm and peft, but not diffusers, kornia (+ kornia_rs), jsonargparse
# (+ its `signatures` extra: docstring-parser, typeshed-client) or PyAV. peft travels too: the
# image's version is not recorded, and the LoRA merge and convolution adapters need a recent one.
# decord and wandb stay behind (the video reader falls back to PyAV; the check runs without a
# logger): with them the archive would not fit.
#
# Python wheels unpack to exactly what pip's --target would lay out, so on the device the archive
# is extracted into a folder put first on PYTHONPATH (benchmarks/device/check.sh); no pip there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKAGES=(
    diffusers==0.42.1
    kornia==0.9.0
    kornia_rs==0.2.0
    jsonargparse==4.53.0
    docstring-parser==0.18.0
    typeshed-client==2.15.0
    av==18.1.0
    peft==0.21.2
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$work/wheels" "${PACKAGES[@]}"
mkdir -p "$work/site"
for wheel in "$work"/wheels/*.whl; do
    python3 -m zipfile -e "$wheel" "$work/site"
done
mkdir -p .devkit
tar -C "$work/site" -cf - . | xz -9 -T0 > .devkit/site.tar.xz.part
mv .devkit/site.tar.xz.part .devkit/site.tar.xz
(cd "$work/wheels" && ls -1) > .devkit/PACKAGES
echo "wrote .devkit/site.tar.xz ($(du -m .devkit/site.tar.xz | cut -f1) MB): $(paste -sd' ' .devkit/PACKAGES)"
