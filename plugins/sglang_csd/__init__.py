"""SGLang adapter (headline method: CSD)."""
