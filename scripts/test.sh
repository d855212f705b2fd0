#!/usr/bin/env bash
# The test command: lint, then pytest. Extra arguments go to pytest (e.g. -m "not slow" for the quick loop).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/ensure-venv.sh"
cd "$ROOT"
ruff check .
ruff format --check .
# Real-engine tests must fail, not skip, if vLLM did not install.
export SPECPLUG_REQUIRE_ENGINES="${SPECPLUG_REQUIRE_ENGINES:-vllm}"
set +e
# The slowest tests in the log: CI has a 90-minute budget, and this is where it goes.
python -m pytest --durations=40 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[specplug] pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
