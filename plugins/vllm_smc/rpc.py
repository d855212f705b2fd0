"""Talk to the session of every vLLM worker: `LLM.collective_rpc(specplug_rpc, args=(action, path))`.

- "report": the session's counters (`steps`: announced steps, proposed/accepted/rescued...; `stats` is the same),
  the memory summary and, for proposers that keep them, draft tokens per source (`drafted`);
- "save": the method's memory to `path` (or its configured `save_path`);
- "load": replace the memory with the file at `path` (a bad file is refused and the current memory kept);
- "reset": back to the memory the session started with (benchmarks do this after warm-up);
- "close": the orderly shutdown hooks (persist memories) — what a server runs before it stops its workers.
Returns None on a worker whose runner has no specplug session.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("specplug")
ACTIONS = ("report", "save", "load", "reset", "close")


def specplug_rpc(worker: Any, action: str, path: str | None = None) -> dict[str, Any] | None:
    session = getattr(getattr(worker, "model_runner", None), "specplug_session", None)
    if session is None:
        return None
    if action not in ACTIONS:
        raise ValueError(f"specplug_rpc: unknown action {action!r} ({', '.join(ACTIONS)})")
    failed = getattr(getattr(worker.model_runner, "drafter", None), "failed_requests", None)
    if action == "save":
        return {"saved": _save(session, path), **report(session, failed)}
    if action == "load":
        return {**_load(session, path), **report(session, failed)}
    if action == "reset":
        session.reset_memory()
    if action == "close":
        from specplug.plugins.vllm_smc.host import close

        close(worker.model_runner)
    return report(session, failed)


def report(session: Any, failed_requests: Any = None) -> dict[str, Any]:
    found = session.report()
    if failed_requests is not None:  # requests whose drafting failed in the proposer slot (decoded without drafts)
        found["failed_requests"] = len(failed_requests)
    found["stats"] = found.get("steps", {})
    drafted = getattr(session.proposer, "drafted", None)
    if drafted is not None:
        found["drafted"] = dict(drafted)
    found["config"] = dict(session.config)
    return found


def _save(session: Any, path: str | None) -> bool:
    target = path or session.config.get("save_path")
    if not target:
        return False
    save = getattr(session.proposer, "save", None) or getattr(session.memory, "save", None)
    if save is None:
        return False
    try:
        save(target)
    except Exception:
        log.exception("specplug: could not save the %s memory to %s", session.method, target)
        return False
    return True


def _load(session: Any, path: str | None) -> dict[str, Any]:
    """Swap in the memory of another file while serving (the worker runs steps and RPCs on one thread, so no step
    sees half a swap); a bad file is refused and the current memory kept."""
    from specplug.core.persist import DataFileError

    load = getattr(session.verifier, "load_memory", None) or getattr(session.proposer, "load_memory", None)
    if not path or load is None:
        return {"loaded": False, "error": f"{session.method} has no memory file to load"}
    try:
        session.memory = load(path)
    except DataFileError as exc:
        log.error("specplug: %s; %s keeps serving with its current memory", exc, session.method)
        return {"loaded": False, "error": str(exc)}
    return {"loaded": True}


# The documented per-method entry points of earlier releases: the same function.
csd_rpc = specplug_rpc
toolspec_rpc = specplug_rpc
