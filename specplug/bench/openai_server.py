"""Run vLLM's OpenAI server as a child process until it answers `/health` (the load harness and the server tests
share it)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(base: str, timeout: float = 5.0) -> int:
    """The status `base + "/health"` answers with; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@contextlib.contextmanager
def running_server(
    command: list[str], env: dict[str, str], base: str, log_path: Path, start_timeout_s: float = 600.0
) -> Iterator[subprocess.Popen]:
    """Run `command` (output to `log_path`) until `/health` answers 200, yield the process, then SIGTERM it (the
    orderly stop a service manager sends) and wait; a server that exits or stays silent while starting raises with
    the tail of its log."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            began = time.monotonic()
            while health(base) != 200:
                if proc.poll() is not None:
                    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                    raise RuntimeError(f"the server exited with {proc.returncode} while starting:\n{tail}")
                if time.monotonic() - began > start_timeout_s:
                    raise TimeoutError(f"the server did not answer /health in {start_timeout_s:.0f} s ({log_path})")
                time.sleep(2)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
