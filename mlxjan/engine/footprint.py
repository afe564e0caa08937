"""How much memory a model's worker will need, estimated before it loads.

Weights (the file, or the MLX folder) plus the KV cache its engine allocates for the context
and batch slots, plus working buffers. llama.cpp allocates the whole KV cache at load: each
of its slots holds a full context (f16 keys and values), on sliding-window layers too (its
default `swa_full`, which keeps every cached prefix reusable). MLX grows its cache as a
prompt does, and mlx-lm keeps only the window on sliding layers; one full context is the
estimate. The measured figure (the worker's resident memory) is shown beside it once the
model is loaded.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from mlxjan.engine.protocol import EngineSpec
from mlxjan.models.gguf_meta import read_gguf_fields

KV_BYTES = 2  # f16 / bf16 per key or value element
# The worker process itself (Python, the engine library) and the engine's compute buffers,
# as measured on the test models (its resident memory beyond weights and KV cache).
PROCESS_BYTES = 128 * 1024**2
LLAMACPP_SLOTS = 4  # engine/llamacpp/engine.py MAX_SLOTS: slots allocated at load
# One layer in N attends over the whole context; the others over a sliding window.
FULL_ATTENTION_EVERY = {"gemma3": 6, "gemma2": 2, "gpt-oss": 2, "cohere2": 4}


@dataclass(frozen=True)
class Attention:
    """The model's attention shape, as far as the KV cache is concerned."""

    layers: int
    kv_heads: int
    head_dim_k: int
    head_dim_v: int
    sliding_window: int | None = None
    full_every: int = 1  # 1: every layer attends over the whole context


@dataclass(frozen=True)
class Footprint:
    weights: int
    kv_cache: int
    buffers: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.buffers


def estimate(spec: EngineSpec) -> Footprint:
    """What `spec`'s worker will hold once loaded (bytes)."""
    manifest = spec.manifest
    attention = _attention(spec.weights, manifest.format, manifest.sha256)
    llamacpp = spec.kind == "llamacpp"
    slots = min(spec.max_batch, LLAMACPP_SLOTS) if llamacpp else 1
    if attention is None:  # unreadable metadata: a generous guess from the weights alone
        return Footprint(manifest.size, manifest.size // 2, PROCESS_BYTES)
    if manifest.kind == "embedding":
        # No cache is kept between batches; a batch of a whole context's tokens holds f32
        # attention scores and their softmax, tokens x tokens per head (flash attention is
        # off for them). nomic-embed F16 after a 2,000-token input: 821 MiB measured, 774
        # estimated.
        scores = 2 * spec.context_length ** 2 * attention.kv_heads * 4
        return Footprint(manifest.size, 0, PROCESS_BYTES + scores)
    kv_cache = kv_cache_bytes(attention, spec.context_length, slots, windowed=not llamacpp)
    return Footprint(manifest.size, kv_cache, PROCESS_BYTES)


def kv_cache_bytes(attention: Attention, context_length: int, slots: int, *,
                   windowed: bool) -> int:
    """`windowed`: sliding-window layers hold only their window (MLX), not the context."""
    per_token_layer = attention.kv_heads * (attention.head_dim_k + attention.head_dim_v)
    full_layers = attention.layers
    window_tokens = context_length
    if windowed and attention.sliding_window is not None and attention.full_every > 1:
        full_layers = -(-attention.layers // attention.full_every)
        window_tokens = min(context_length, attention.sliding_window)
    sliding_layers = attention.layers - full_layers
    tokens = full_layers * context_length + sliding_layers * window_tokens
    return tokens * slots * per_token_layer * KV_BYTES


@functools.lru_cache(maxsize=64)
def _attention(weights: Path, model_format: str, sha256: str) -> Attention | None:
    """Read once per model file (`sha256` keys the cache, so a replaced model is reread)."""
    try:
        return _gguf_attention(weights) if model_format == "gguf" else _mlx_attention(weights)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _gguf_attention(path: Path) -> Attention | None:
    fields = read_gguf_fields(path, ("general.architecture",))
    arch = str(fields.get("general.architecture"))
    keys = {name: f"{arch}.{name}" for name in (
        "block_count", "attention.head_count", "attention.head_count_kv", "embedding_length",
        "attention.key_length", "attention.value_length", "attention.sliding_window")}
    fields = read_gguf_fields(path, tuple(keys.values()))

    def number(name: str) -> int | None:
        value = fields.get(keys[name])
        if isinstance(value, list):  # per layer: the largest bounds the cache
            value = max(value, default=None)
        return value if isinstance(value, int) else None

    layers, heads = number("block_count"), number("attention.head_count")
    if layers is None or heads is None:
        return None
    embedding = number("embedding_length")
    key_dim = number("attention.key_length") or (embedding // heads if embedding else 128)
    return Attention(layers=layers, kv_heads=number("attention.head_count_kv") or heads,
                     head_dim_k=key_dim,
                     head_dim_v=number("attention.value_length") or key_dim,
                     sliding_window=number("attention.sliding_window"),
                     full_every=FULL_ATTENTION_EVERY.get(arch, 1))


def _mlx_attention(folder: Path) -> Attention | None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    layers, heads = text["num_hidden_layers"], text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    window = text.get("sliding_window")
    model_type = str(text.get("model_type", "")).removesuffix("_text")
    return Attention(layers=int(layers), kv_heads=int(kv_heads), head_dim_k=int(head_dim),
                     head_dim_v=int(head_dim),
                     sliding_window=int(window) if isinstance(window, int) else None,
                     full_every=FULL_ATTENTION_EVERY.get(model_type, 1))
