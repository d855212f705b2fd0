"""specplug.core — engine-free speculative-decoding algorithms and the contract engines plug into.

Nothing in this package imports vLLM, SGLang or TensorRT-LLM (a test enforces it). Engine adapters live in
`specplug.plugins.<engine>_<method>` and reach the algorithms only through the pluggy hooks of
`specplug.core.hookspecs` and the data types of `specplug.core.types`.
"""
