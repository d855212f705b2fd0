"""ToolSpec (schema-aware, retrieval-based drafting for tool calls): settings and call formats here, the state
machine in `grammar`, the drafter `core.proposers.toolspec`, its memory `core.memory.invocation`."""

from specplug.core.toolspec.config import ToolSpecConfig

__all__ = ["ToolSpecConfig"]
