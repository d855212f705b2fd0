"""Run a probe script (a real vLLM engine in its own process) on a JSON job and read back its `RESULT <json>` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# The start of an offline-engine probe script: environment, imports (`#IMPORTS` is replaced by the probe's own),
# the job from argv[1] and an `llm` with the job's speculative and additional configs (greedy ToolSpec probes).
ENGINE_PROBE_HEAD = r"""import json, os, sys, time
os.environ.update({"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"})
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
#IMPORTS
    job = json.load(open(sys.argv[1]))
    kwargs = {k: job[k] for k in ("speculative_config", "additional_config") if job.get(k)}
    llm = LLM(model=job["model"], dtype="float32", enforce_eager=True, max_model_len=2048, max_num_seqs=4, seed=0,
              async_scheduling=False, enable_prefix_caching=False, disable_log_stats=False, **kwargs)
"""


def probe_prelude(kv_cache_gib: int = 1) -> str:
    """The first lines of a probe that builds its own engine: the environment (engine core in this process, so the
    probe can reach the scheduler), vLLM's imports and the job from argv[1] as `job`."""
    return (
        "import json, os, sys\n"
        f'os.environ.update({{"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "{kv_cache_gib}", '
        '"TOKENIZERS_PARALLELISM": "false",\n'
        '                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})\n'
        'if __name__ == "__main__":\n'
        "    from vllm import LLM, SamplingParams\n"
        "    job = json.load(open(sys.argv[1]))\n"
    )


def run_probe(tmp_path: Path, script: str, job: dict, timeout: float = 900) -> tuple[int, Any | None, str]:
    """(exit code, the first RESULT payload or None, stdout + stderr) of `script` run on `job`."""
    script_file, job_file = tmp_path / "probe.py", tmp_path / "job.json"
    script_file.write_text(script)
    job_file.write_text(json.dumps(job))
    proc = subprocess.run(
        [sys.executable, str(script_file), str(job_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return proc.returncode, json.loads(found[0]) if found else None, proc.stdout + proc.stderr
