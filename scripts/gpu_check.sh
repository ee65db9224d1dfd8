#!/usr/bin/env bash
# GPU acceptance run (benchmarks/gpu_check.py): ours against ComfyUI's native Wan on a CUDA GPU,
# the host driven in process; writes OUT/rows.jsonl and OUT/table.md ($OUT, else ./gpu_check_out).
#   - With .gpu_carry/ present (made by scripts/gpu_carry.sh; a GPU machine without network): the
#     machine's own python3, the carried wheels installed into /tmp, the carried ComfyUI source.
#   - Otherwise: the project's environment (scripts/setup_env.sh), which needs network once.
# Extra arguments go to benchmarks/gpu_check.py (--budget SECONDS, --only GROUP..., --smoke).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
if [ -d "$here/.gpu_carry" ]; then
  site=/tmp/wan_gpu_site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$here"/.gpu_carry/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" COMFYUI_PATH="$here/.gpu_carry/ComfyUI"
  PY=python3
else
  bash "$here/scripts/setup_env.sh"
  CACHE="${WAN_PACK_CACHE:-$HOME/.cache/wan-video-pack}"
  # shellcheck disable=SC1091
  source "$CACHE/env.sh"
  PY="$WAN_PACK_VENV/bin/python"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
