"""vLLM adapter (headline method: SMC-SD). Other methods get thin modules here when they gain a vLLM arm."""
