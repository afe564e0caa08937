"""Small synthetic GGUF files (written with gguf.GGUFWriter) for pure converter tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from gguf.quants import quantize

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED = ["<tool_call>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ in"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_level_chars() -> list[str]:
    """GPT-2's byte -> printable character table, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def bpe_vocab() -> tuple[list[str], list[int]]:
    tokens = [*byte_level_chars(), "Ġt", "he", "Ġthe", "in", "Ġin"]
    types = [1] * len(tokens)
    tokens += SPECIALS + USER_DEFINED
    types += [3] * len(SPECIALS) + [4] * len(USER_DEFINED)
    return tokens, types


@dataclass
class Spec:
    arch: str = "qwen2"
    layers: int = 2
    hidden: int = 256
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 512
    tied: bool = False
    seed: int = 0
    # GGUF tensor kind (e.g. "attn_q") -> storage type; F32 where not listed.
    types: dict[str, str] = field(default_factory=lambda: {
        "token_embd": "Q8_0", "attn_q": "Q4_0", "attn_k": "Q5_0", "attn_v": "Q8_0",
        "attn_output": "F16", "ffn_gate": "BF16", "ffn_up": "Q5_0", "ffn_down": "Q8_0",
        "output": "F16"})


def tensor_shapes(spec: Spec, vocab: int) -> dict[str, tuple[int, ...]]:
    """GGUF tensor names and their numpy (rows, cols) shapes."""
    h, hd = spec.hidden, spec.hidden // spec.heads
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (vocab, h),
                                          "output_norm.weight": (h,)}
    if not spec.tied:
        shapes["output.weight"] = (vocab, h)
    for i in range(spec.layers):
        block = {"attn_norm.weight": (h,), "attn_q.weight": (h, h),
                 "attn_k.weight": (spec.kv_heads * hd, h),
                 "attn_v.weight": (spec.kv_heads * hd, h), "attn_output.weight": (h, h),
                 "ffn_norm.weight": (h,), "ffn_gate.weight": (spec.ffn, h),
                 "ffn_up.weight": (spec.ffn, h), "ffn_down.weight": (h, spec.ffn)}
        if spec.arch == "qwen2":
            block |= {"attn_q.bias": (h,), "attn_k.bias": (spec.kv_heads * hd,),
                      "attn_v.bias": (spec.kv_heads * hd,)}
        if spec.arch == "gemma3":
            block |= {"attn_q_norm.weight": (hd,), "attn_k_norm.weight": (hd,),
                      "post_attention_norm.weight": (h,), "post_ffw_norm.weight": (h,)}
        shapes |= {f"blk.{i}.{k}": v for k, v in block.items()}
    return shapes


def write_gguf(path: Path, spec: Spec | None = None) -> dict[str, np.ndarray]:
    """Write a synthetic model; return its float32 tensors (before quantisation) by name."""
    spec = spec or Spec()
    tokens, types = bpe_vocab()
    writer = gguf.GGUFWriter(str(path), spec.arch)
    writer.add_block_count(spec.layers)
    writer.add_context_length(4096)
    writer.add_embedding_length(spec.hidden)
    writer.add_feed_forward_length(spec.ffn)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1000000.0)
    if spec.arch == "gemma3":
        writer.add_key_length(spec.hidden // spec.heads)
        writer.add_value_length(spec.hidden // spec.heads)
        writer.add_sliding_window(512)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)
    rng = np.random.default_rng(spec.seed)
    originals = {}
    for name, shape in tensor_shapes(spec, len(tokens)).items():
        data = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if len(shape) == 1 and name.endswith("norm.weight"):
            data += 1.0
        originals[name] = data
        kind = gguf.GGMLQuantizationType[spec.types.get(name.split(".")[-2], "F32")]
        stored = data if kind == gguf.GGMLQuantizationType.F32 else quantize(data, kind)
        writer.add_tensor(name, stored, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return originals
