"""`config.json` for mlx-lm from GGUF metadata, one builder per supported architecture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from converters.gguf_meta import GGUFMeta
from mlxjan.errors import UnsupportedArchitectureError

Config = dict[str, Any]


def _common(meta: GGUFMeta, vocab_size: int, tied: bool) -> Config:
    heads = int(meta.require("attention.head_count"))
    config: Config = {
        "hidden_size": int(meta.require("embedding_length")),
        "num_hidden_layers": int(meta.require("block_count")),
        "intermediate_size": int(meta.require("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.arch_get("attention.head_count_kv", heads)),
        "rms_norm_eps": _f32(meta.arch_get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(meta.arch_get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.arch_get("context_length", 2048)),
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
    }
    for key, gguf_key in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
        value = meta.get(f"tokenizer.ggml.{gguf_key}_token_id")
        if value is not None:
            config[key] = int(value)
    if (scaling := _rope_scaling(meta)) is not None:
        config["rope_scaling"] = scaling
    return config


def _f32(value: Any) -> float:
    """A float32 metadata value by its shortest decimal (1e-06, not 9.99999997e-07)."""
    return float(str(np.float32(value)))


def _rope_scaling(meta: GGUFMeta) -> Config | None:
    kind = meta.arch_get("rope.scaling.type")
    factor = meta.arch_get("rope.scaling.factor")
    if kind in (None, "none") or factor is None:
        return None
    scaling: Config = {"type": str(kind), "rope_type": str(kind), "factor": float(factor)}
    original = meta.arch_get("rope.scaling.original_context_length")
    if original is not None:
        scaling["original_max_position_embeddings"] = int(original)
    return scaling


def _qwen2(meta: GGUFMeta, vocab_size: int, tied: bool) -> Config:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            **_common(meta, vocab_size, tied)}


def _llama(meta: GGUFMeta, vocab_size: int, tied: bool) -> Config:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              **_common(meta, vocab_size, tied)}
    head_dim = meta.arch_get("attention.key_length")
    if head_dim is not None:
        config["head_dim"] = int(head_dim)
    return config


def _gemma3(meta: GGUFMeta, vocab_size: int, tied: bool) -> Config:
    config = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
              **_common(meta, vocab_size, tied)}
    head_dim = int(meta.arch_get("attention.key_length", 256))
    config["head_dim"] = head_dim
    # Gemma 3 scales queries by 1/sqrt(head_dim) unless the checkpoint says otherwise.
    config["query_pre_attn_scalar"] = head_dim
    window = meta.arch_get("attention.sliding_window")
    if window is not None:
        config["sliding_window"] = int(window)
    # Every sixth layer is global in Gemma 3 (llama.cpp hard-codes the same pattern).
    config["sliding_window_pattern"] = 6
    config["rope_local_base_freq"] = 10000.0
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if (value := meta.arch_get(key)) is not None:
            config[key] = float(value)
    return config


BUILDERS: dict[str, Callable[[GGUFMeta, int, bool], Config]] = {
    "qwen2": _qwen2,
    "llama": _llama,
    "mistral": _llama,  # llama.cpp writes Mistral 7B as "llama"; newer files say "mistral"
    "gemma3": _gemma3,
}


def check_architecture(arch: str) -> None:
    if arch not in BUILDERS:
        raise UnsupportedArchitectureError(arch, tuple(BUILDERS))


def build_config(meta: GGUFMeta, vocab_size: int, tied: bool) -> Config:
    """The Hugging Face style config mlx-lm reads, for the GGUF's architecture."""
    check_architecture(meta.arch)
    return BUILDERS[meta.arch](meta, vocab_size, tied)
