"""Model converters: GGUF -> MLX, Hugging Face safetensors -> quantised MLX, tokenizer from GGUF.

Import the submodules you need (`converters.gguf_to_mlx`, `converters.tiny`, ...): this package
does no work at import time, and MLX is only imported by the modules that run it.
"""
