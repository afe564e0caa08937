from __future__ import annotations

from pathlib import Path

import pytest

from converters.gguf_to_mlx import ConvertOptions
from converters.hf_to_mlx import convert_hf
from converters.install import convert_to_store
from converters.tiny import make_tiny_model
from mlxjan.cli import main
from mlxjan.errors import ConversionError
from mlxjan.models.store import ModelStore, folder_sha256
from tests.unit.converters.synthetic import TEMPLATE, write_gguf


@pytest.fixture
def gguf_path(tmp_path: Path) -> Path:
    write_gguf(tmp_path / "m.gguf")
    return tmp_path / "m.gguf"


def test_convert_installs_a_new_mlx_model(gguf_path: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    manifest = convert_to_store(store, str(gguf_path),
                                options=ConvertOptions(q_bits=4, progress=False))
    assert manifest.id == "m-mlx-q4"
    assert (manifest.format, manifest.file, manifest.architecture) == ("mlx", ".", "qwen2")
    assert manifest.chat_template == TEMPLATE
    assert manifest.context_length == 4096
    folder = store.weights_path(manifest)
    assert manifest.sha256 == folder_sha256(folder)
    with pytest.raises(ConversionError, match="already exists"):
        convert_to_store(store, str(gguf_path), options=ConvertOptions(q_bits=4))


def test_cli_convert(gguf_path: Path, tmp_path: Path, restore_logging: None,
                     capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    args = ["convert", str(gguf_path), "--to", "mlx", "--dtype", "float16", "--id", "new",
            "--quiet", "--data-dir", home]
    assert main(args) == 0
    assert "new: installed" in capsys.readouterr().out
    manifest = ModelStore(Path(home)).get("new")
    assert manifest is not None and manifest.format == "mlx"
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nothing"), "--data-dir", home]) == 1


def test_hf_folder_to_quantised_mlx(gguf_path: Path, tmp_path: Path) -> None:
    import mlx_lm

    hf = make_tiny_model(gguf_path, tmp_path / "hf", hidden=64, intermediate=128)
    config = convert_hf(hf, tmp_path / "q", ConvertOptions(q_bits=8, q_group_size=32))
    assert config["quantization"]["bits"] == 8
    model, tokenizer = mlx_lm.load(str(tmp_path / "q"))
    assert isinstance(mlx_lm.generate(model, tokenizer, [1, 2], max_tokens=2), str)
