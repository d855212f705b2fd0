"""The reference runner: a small transformers-based engine that drives any (proposer, verifier) pair.

It is the oracle engine adapters are tested against, and the quickest way to try a method on a real model.
Needs the `bench` extra (transformers).
"""
