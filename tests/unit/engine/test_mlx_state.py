"""MLX KV caches survive the trip to bytes and back (the disk prompt cache's payload)."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from mlxjan.engine.mlx.state import decode_layers, encode_layers


def test_layers_round_trip_through_bytes() -> None:
    layers = []
    for seed in range(3):
        cache = KVCache()
        keys = mx.random.normal((1, 2, 7, 4), key=mx.random.key(seed))
        cache.update_and_fetch(keys, keys * 2)
        layers.append(cache)
    data = bytearray(encode_layers(layers, 0))
    restored = decode_layers(data)
    assert [c.offset for c in restored] == [7, 7, 7]
    for before, after in zip(layers, restored, strict=True):
        k0, v0 = before.keys_and_values()
        k1, v1 = after.keys[..., :7, :], after.values[..., :7, :]
        assert mx.array_equal(k0[..., :7, :], k1) and mx.array_equal(v0[..., :7, :], v1)
