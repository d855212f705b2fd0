"""Memories that persist across requests: bounded, checksummed on disk, data only, namespaced."""
