"""`specplug bench`: honest A/B throughput comparisons of decoding arms on one engine.

Every arm gets the same pre-tokenized prompts, the same sampling settings and the same engine settings; only
the speculative method differs. Warm-up is excluded, arm order alternates between rounds, and quality is
reported next to speed (exact match to the `ar` arm under greedy decoding).
"""
