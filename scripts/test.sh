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
# Two workers, a test file each at a time (a file's engine or server fixture stays in one process): engine starts
# are mostly single-threaded imports and loads, so two overlap well on two cores. SPECPLUG_TEST_WORKERS=0 runs
# everything in this process. The slowest tests go to the log: CI has a 90-minute budget, and this is where it goes.
workers="${SPECPLUG_TEST_WORKERS:-2}"
python -m pytest -n "$workers" --dist loadfile --durations=40 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[specplug] pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
