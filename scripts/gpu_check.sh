#!/usr/bin/env bash
# GPU acceptance run (needs a CUDA GPU): ours against ComfyUI's native Wan under the host's default
# flags; prints one table. See benchmarks/gpu_check.py. Extra arguments go to that script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup_env.sh"
CACHE="${WAN_PACK_CACHE:-$HOME/.cache/wan-video-pack}"
# shellcheck disable=SC1091
source "$CACHE/env.sh"
cd "$here"
exec "$WAN_PACK_VENV/bin/python" benchmarks/gpu_check.py "$@"
