from __future__ import annotations

import numpy as np
import pytest

from converters.names import hf_name, restore_tensor, unpermute_rope
from mlxjan.errors import ConversionError


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.LlamaModel.permute, copied."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


@pytest.mark.parametrize("n_head", [1, 2, 4])
def test_unpermute_inverts_llama_cpp_permute(n_head: int) -> None:
    w = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    assert np.array_equal(unpermute_rope(llama_cpp_permute(w, n_head), n_head), w)


@pytest.mark.parametrize(("arch", "gguf", "hf"), [
    ("qwen2", "token_embd.weight", "model.embed_tokens.weight"),
    ("qwen2", "output.weight", "lm_head.weight"),
    ("qwen2", "blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
    ("qwen2", "blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
    ("gemma3", "blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"),
    ("gemma3", "blk.1.post_attention_norm.weight",
     "model.layers.1.post_attention_layernorm.weight"),
    ("gemma3", "blk.1.attn_k_norm.weight", "model.layers.1.self_attn.k_norm.weight"),
    ("llama", "rope_freqs.weight", None),
])
def test_names(arch: str, gguf: str, hf: str | None) -> None:
    assert hf_name(arch, gguf) == hf


def test_unknown_tensor_is_an_error() -> None:
    with pytest.raises(ConversionError, match="mystery"):
        hf_name("qwen2", "blk.0.mystery.weight")


def test_restore_only_where_llama_cpp_changed_the_tensor() -> None:
    w = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert np.array_equal(restore_tensor("qwen2", q, w, 2, 1), w)  # NeoX rope: untouched
    assert np.array_equal(restore_tensor("llama", q, llama_cpp_permute(w, 2), 2, 1), w)
    k = "model.layers.0.self_attn.k_proj.weight"
    assert np.array_equal(restore_tensor("mistral", k, llama_cpp_permute(w, 1), 2, 1), w)
    norm = np.ones(4, dtype=np.float32) * 1.5
    assert np.allclose(restore_tensor("gemma3", "model.norm.weight", norm, 2, 1), 0.5)
    assert np.allclose(restore_tensor("qwen2", "model.norm.weight", norm, 2, 1), 1.5)
