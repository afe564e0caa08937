"""Memory estimates before a load: the header reader, KV cache sizes, sliding windows."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from mlxjan.engine.footprint import (
    PROCESS_BYTES,
    Attention,
    estimate,
    kv_cache_bytes,
    read_gguf_fields,
)
from mlxjan.models.store import new_manifest
from mlxjan.testing.fake_engine import fake_worker_spec
from tests.unit.models.ggufs import finish


def _gguf(path: Path, arch: str = "qwen2", window: int | None = None) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(24)
    writer.add_head_count(14)
    writer.add_head_count_kv(2)
    writer.add_embedding_length(896)
    writer.add_token_list([f"tok{i}" for i in range(5000)])  # an array to skip
    writer.add_token_scores([0.5] * 5000)
    if window is not None:
        writer.add_sliding_window(window)
    writer.add_context_length(32768)
    return finish(writer, path)


def test_the_header_reader_agrees_with_ggufs_own(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path, "r")
    keys = ("qwen2.block_count", "qwen2.attention.head_count_kv", "qwen2.context_length",
            "general.architecture", "tokenizer.ggml.scores")
    ours = read_gguf_fields(path, keys)
    theirs = {key: reader.fields[key].contents() for key in keys}
    assert ours == theirs
    assert read_gguf_fields(path, ("no.such.key",)) == {}


def test_kv_cache_counts_every_slot_and_the_window_of_sliding_layers_where_kept() -> None:
    full = Attention(layers=24, kv_heads=2, head_dim_k=64, head_dim_v=64)
    assert kv_cache_bytes(full, 4096, 4, windowed=False) == 24 * 4096 * 4 * 2 * 128 * 2
    sliding = Attention(layers=18, kv_heads=1, head_dim_k=256, head_dim_v=256,
                        sliding_window=512, full_every=6)
    # MLX: 3 layers over the whole context, 15 over the window; llama.cpp: all 18 whole.
    assert kv_cache_bytes(sliding, 32768, 1, windowed=True) == (3 * 32768 + 15 * 512) * 1024
    assert kv_cache_bytes(sliding, 32768, 4, windowed=False) == 18 * 32768 * 4 * 1024


def test_an_estimate_is_weights_plus_kv_cache_plus_buffers(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "m.gguf")
    spec = fake_worker_spec("m", context_length=2048)
    manifest = new_manifest(id="m", format="gguf", source="test", file=path.name,
                            sha256="1" * 64, size=path.stat().st_size)
    spec = type(spec)(**{**vars(spec), "kind": "llamacpp", "manifest": manifest,
                         "weights": path})
    need = estimate(spec)
    assert need.weights == path.stat().st_size and need.buffers == PROCESS_BYTES
    assert need.kv_cache == 24 * 2048 * 4 * 2 * 128 * 2
    assert need.total == need.weights + need.kv_cache + need.buffers


def test_a_truncated_gguf_is_a_value_error_and_its_estimate_a_guess(tmp_path: Path) -> None:
    whole = _gguf(tmp_path / "m.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:2000])  # inside the token list
    with pytest.raises(ValueError, match="truncated"):
        read_gguf_fields(cut, ("tokenizer.ggml.scores",))
    manifest = new_manifest(id="cut", format="gguf", source="test", file=cut.name,
                            sha256="2" * 64, size=2000)
    spec = fake_worker_spec("cut")
    spec = type(spec)(**{**vars(spec), "kind": "llamacpp", "manifest": manifest,
                         "weights": cut})
    assert estimate(spec).total == 2000 + 1000 + PROCESS_BYTES
