#!/usr/bin/env bash
# Prepares .gpu_carry/ (ignored by git) for a GPU machine without network, where the acceptance run
# (scripts/gpu_check.sh) uses that machine's own python3 (PyTorch with CUDA, transformers,
# safetensors, sentencepiece, einops, aiohttp, numpy, ...) plus what this folder carries:
#   ComfyUI/  the host's source (this project's ComfyUI 0.30), without what the run never reads:
#             other models' tokenizer files, tests, blueprints, API nodes, documentation;
#   wheels/   the packages such a machine lacks, for its Python 3.12 on x86-64 Linux.
# Run it where pip can reach PyPI, after scripts/setup_env.sh. Prints the size (keep it under
# 60 MiB: the GPU machine takes 64 MiB per call with the working tree).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup_env.sh" >/dev/null
CACHE="${WAN_PACK_CACHE:-$HOME/.cache/wan-video-pack}"
# shellcheck disable=SC1091
source "$CACHE/env.sh"
dest="$here/.gpu_carry"
rm -rf "$dest"
mkdir -p "$dest/wheels"
cp -a "$COMFYUI_PATH" "$dest/ComfyUI"
(cd "$dest/ComfyUI" && rm -rf .git tests tests-unit blueprints comfy_api_nodes script_examples openapi.yaml \
   input output custom_nodes user models/*/* && find . -name '__pycache__' -prune -exec rm -rf {} + \
   && find . -name '*.md' -delete && find comfy/text_encoders comfy/sd1_tokenizer -type f ! -name '*.py' -delete)
mkdir -p "$dest/ComfyUI/custom_nodes" "$dest/ComfyUI/input" "$dest/ComfyUI/output"
# What the in-process host and this pack import that the GPU machine's image does not hold
# (device KINDS.md lists its packages), at the versions this project's environment runs. comfy-kitchen
# (43 MiB) is the host's quantized kernels; ComfyUI 0.30 imports it unconditionally (comfy/ldm/joyimage).
WHEELS=(gguf==0.19.0 ftfy==6.3.1 wcwidth==0.9.4 comfy-aimdo==0.4.11 torchsde==0.2.6 trampoline==0.1.2
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        comfy-kitchen==0.2.26)
"$WAN_PACK_VENV/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 --platform any \
  -d "$dest/wheels" "${WHEELS[@]}" 2> >(grep -v 'WARNING: Location' >&2)
size=$(du -sm "$dest" | cut -f1)
echo "[gpu_carry] $dest: ${size} MiB (ComfyUI $(du -sm "$dest/ComfyUI" | cut -f1) MiB, wheels $(du -sm "$dest/wheels" | cut -f1) MiB)"
if [ "$size" -gt 60 ]; then
  echo "[gpu_carry] too large for the GPU machine's 64 MiB per call" >&2
  exit 1
fi
