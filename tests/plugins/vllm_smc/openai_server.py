"""Start a vLLM OpenAI server for a test and stop it afterwards (shared by the server tests)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(command: list[str], env: dict[str, str], base: str, log_path: Path) -> Iterator[None]:
    """Run `command` until `base + "/health"` answers (at most 10 minutes), yield, then terminate it."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 600
            while True:
                assert proc.poll() is None, log_path.read_text()[-4000:]
                assert time.time() < deadline, "the server did not come up in 10 minutes"
                try:
                    with urllib.request.urlopen(base + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(2)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
