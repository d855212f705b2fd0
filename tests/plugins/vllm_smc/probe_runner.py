"""Run a probe script (a real vLLM engine in its own process) on a JSON job and read back its `RESULT <json>` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


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
