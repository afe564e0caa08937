"""Small real GGUF files for the store and fetch tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

CHAT_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


def write_gguf(path: Path, *, context_length: int = 2048,
               chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """A valid GGUF: llama metadata and one tiny f32 tensor."""
    writer = gguf.GGUFWriter(path, "llama")  # adds general.architecture = "llama"
    writer.add_context_length(context_length)  # llama.context_length
    if chat_template is not None:
        writer.add_chat_template(chat_template)  # tokenizer.chat_template
    return finish(writer, path)


def finish(writer: gguf.GGUFWriter, path: Path) -> Path:
    """Add one tiny f32 tensor and write the file `writer` was opened on."""
    writer.add_tensor("tiny.weight", np.arange(8, dtype=np.float32).reshape(2, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
