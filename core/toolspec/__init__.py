"""ToolSpec (schema-aware, retrieval-based drafting for tool calls), all in this package: settings and call
formats (`config`, `formats`), the tool-call state machine (`grammar`), the drafter (`drafter`), its per-tenant
retrieval memory (`memory`) and the hook implementations that join them to any engine host (`plugin`)."""

from specplug.core.toolspec.config import ToolSpecConfig

__all__ = ["ToolSpecConfig"]
