#!/usr/bin/env bash
# The project's test command: builds/reuses the cached environment and runs the whole suite.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup_env.sh"
CACHE="${WAN_PACK_CACHE:-$HOME/.cache/wan-video-pack}"
# shellcheck disable=SC1091
source "$CACHE/env.sh"
cd "$here"
exec "$WAN_PACK_VENV/bin/python" -m pytest tests "$@"
