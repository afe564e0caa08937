"""The `mlxjan` command line over a temporary data dir (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter, PoolingType

from mlxjan.cli import _parser, _settings, main


def _tiny_gguf(path: Path, *, embedding: bool = False) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(1024)
    if embedding:
        writer.add_pooling_type(PoolingType.MEAN)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_pull_list_rm_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    gguf = _tiny_gguf(tmp_path / "Tiny Model.gguf")
    assert main(["pull", str(gguf), "--quiet", *data]) == 0
    assert main(["list", *data]) == 0
    listing = capsys.readouterr().out
    assert "tiny-model" in listing and "1024" in listing
    assert main(["pull", str(gguf), "--id", "other", "--quiet", *data]) == 0
    assert main(["rm", "tiny-model", *data]) == 0
    assert main(["rm", "tiny-model", *data]) == 1
    capsys.readouterr()
    assert main(["list", *data]) == 0
    out = capsys.readouterr().out
    assert "other" in out and "tiny-model" not in out


def test_list_says_each_models_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["pull", str(_tiny_gguf(tmp_path / "chat.gguf")), "--quiet", *data]) == 0
    embedder = _tiny_gguf(tmp_path / "embed.gguf", embedding=True)
    assert main(["pull", str(embedder), "--quiet", *data]) == 0
    capsys.readouterr()
    assert main(["list", *data]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows == {"ID": "KIND", "chat": "chat", "embed": "embedding"}


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", ".."])
def test_traversal_ids_are_refused(tmp_path: Path, bad_id: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    gguf = _tiny_gguf(tmp_path / "m.gguf")
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["pull", str(gguf), "--id", bad_id, "--quiet", *data]) == 1
    assert "not a valid model id" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists()
    assert main(["rm", bad_id, *data]) == 1


def test_unknown_catalog_id_is_a_clear_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "no-such-model", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown model" in err and "qwen2.5-coder-0.5b-instruct" in err


def test_invalid_setting_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "70000", "--data-dir", str(tmp_path)]) == 2
    assert "port" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "chosen"), [("on", True), ("off", False), ("auto", None)])
def test_flash_attention_flag(flag: str, chosen: bool | None,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXJAN_FLASH_ATTENTION", "true")  # a flag beats the environment
    args = _parser().parse_args(["serve", "--flash-attention", flag])
    assert _settings(args).flash_attention is chosen
