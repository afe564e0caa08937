"""GGUF tensor names -> Hugging Face / mlx-lm names, and undoing llama.cpp's edits to tensors.

llama.cpp's convert_hf_to_gguf changes some tensors on the way in: it permutes the Q and K
projections of llama-family models (its rope is "normal", not NeoX-style), and for Gemma
it folds the "+1" of the RMSNorm into the stored norm weights. Both are undone here.
"""

from __future__ import annotations

import re

import numpy as np

from mlxjan.errors import ConversionError

_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 3 has four norms per block; llama.cpp names the pre-MLP one ffn_norm.
_GEMMA3_BLOCK = {
    **_BLOCK,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Tensors llama.cpp adds that the Hugging Face model computes instead.
_SKIPPED = {"rope_freqs.weight"}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
PERMUTED_ARCHS = frozenset({"llama", "mistral"})


def hf_name(arch: str, gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor, or None for one the model does not use."""
    if gguf_name in _SKIPPED:
        return None
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    match = _BLOCK_NAME.fullmatch(gguf_name)
    table = _GEMMA3_BLOCK if arch == "gemma3" else _BLOCK
    if match is None or match.group(2) not in table:
        raise ConversionError(f"unknown tensor '{gguf_name}' for architecture '{arch}'")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{table[part]}.{kind}"


def unpermute_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of convert_hf_to_gguf's LlamaModel.permute for a Q or K projection."""
    rows = weight.shape[0]
    split = weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
    restored: np.ndarray = split.swapaxes(1, 2).reshape(weight.shape)
    return restored


def restore_tensor(arch: str, name: str, data: np.ndarray, n_head: int,
                   n_head_kv: int) -> np.ndarray:
    """Undo what llama.cpp did to this (Hugging Face named) tensor at conversion time."""
    if arch in PERMUTED_ARCHS:
        if name.endswith("self_attn.q_proj.weight"):
            return unpermute_rope(data, n_head)
        if name.endswith("self_attn.k_proj.weight"):
            return unpermute_rope(data, n_head_kv)
    if arch == "gemma3" and name.endswith("norm.weight"):
        return data - 1.0  # mlx-lm's Gemma RMSNorm multiplies by (1 + weight) itself
    return data
