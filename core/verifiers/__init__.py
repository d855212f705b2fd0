"""Verifiers: decide which draft tokens to keep from the target's logits, vectorized over the batch."""
