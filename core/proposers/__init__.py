"""Proposers: draft tokens for a batch of sequences."""
