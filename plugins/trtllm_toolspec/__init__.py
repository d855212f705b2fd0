"""TensorRT-LLM adapter (headline method: ToolSpec). TensorRT-LLM has no plugin entry point: users pass the
drafter through `UserProvidedDecodingConfig`, so there is no bootstrap module here."""
