"""MLX KV caches as bytes, for prompt-cache entries on disk.

mlx-lm's own prompt-cache format (safetensors: each layer's state arrays, its class and
scalars in the metadata) written to and read from memory; the disk store adds the checksum,
the model digest and the atomic write. Runs on the MLX engine thread.
"""

from __future__ import annotations

import io
from typing import Any

from mlxjan.engine.prompt_cache import StateCodec

CacheLayers = list[Any]  # one mlx-lm cache object per layer


class _Buffer(io.BytesIO):
    # mx.load picks the format from the file name.
    name = "state.safetensors"


def encode_layers(layers: CacheLayers, size: int) -> memoryview:
    from mlx_lm.models.cache import save_prompt_cache

    buffer = _Buffer()
    save_prompt_cache(buffer, layers)  # type: ignore[arg-type]  # any file object works
    return buffer.getbuffer()


def decode_layers(data: bytearray) -> CacheLayers:
    from mlx_lm.models.cache import load_prompt_cache

    layers: CacheLayers = load_prompt_cache(_Buffer(bytes(data)))  # type: ignore[no-untyped-call]
    return layers


MLX_CODEC: StateCodec[CacheLayers] = StateCodec(encode_layers, decode_layers)
