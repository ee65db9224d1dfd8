#!/usr/bin/env bash
# The main job: a headless text-to-video run of workflows/api/wan2.1_t2v_1.3B_api.json in a real ComfyUI,
# writing an mp4 to output/. Extra arguments go to the client (python -m wan_client --help): another
# workflow, --models, --prompt, --seed, --server URL, --prompts FILE ... Without the real checkpoints
# it uses clearly labelled tiny stand-in weights.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup_env.sh"
CACHE="${WAN_PACK_CACHE:-$HOME/.cache/wan-video-pack}"
# shellcheck disable=SC1091
source "$CACHE/env.sh"
cd "$here"
exec "$WAN_PACK_VENV/bin/python" -m wan_client "$@"
