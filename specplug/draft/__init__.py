"""`specplug draft`: train a small draft model for a target, from the target's own sampled outputs.

No published model shares SmolLM2's tokenizer at a smaller size, and an untrained early exit of the target costs
two thirds of it and agrees badly. `specplug draft distill` builds the draft a user of SpecForge/EAGLE-style
tooling would train: a few transformer layers initialised from the target's, with the target's embeddings and LM
head, fitted to the target's next-token laws on prompts the benchmarks never measure. The result is a plain
Hugging Face checkpoint in the model cache that vLLM's `draft_model`, specplug SMC-SD and CSD load by name.

    samples.py   the training prompts and the target's sampled continuations with its top-K log-probs (shards)
    train.py     the draft's initialisation, the objective, the resumable training loop and the held-out figures
    store.py     where drafts live in the cache, resolution by name, the atomic install
    cli.py       the `draft` verbs
"""
