"""A GGUF on the MLX engine is converted once, cached by digest, and removed with its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxjan.engine.mlx.converted import converted_dir, mlx_model_dir
from mlxjan.models.fetch import import_gguf
from mlxjan.models.store import ModelStore, folder_sha256, new_manifest, staged_size


def _fake_convert(calls: list[Path]):  # type: ignore[no-untyped-def]
    def convert(gguf: Path, out: Path, options: object) -> dict[str, object]:
        calls.append(gguf)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return {}

    return convert


def test_gguf_converted_once_then_reused(store: ModelStore, gguf_file: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr("converters.gguf_to_mlx.convert_gguf", _fake_convert(calls))
    manifest = import_gguf(store, gguf_file, model_id="tiny")
    first = mlx_model_dir(store, manifest)
    assert first == converted_dir(store, manifest) and (first / "config.json").is_file()
    assert mlx_model_dir(store, manifest) == first
    assert calls == [store.weights_path(manifest)]
    assert not list(store.staging_dir.iterdir())


def test_failed_conversion_leaves_nothing(store: ModelStore, gguf_file: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gguf: Path, out: Path, options: object) -> None:
        out.mkdir(parents=True)
        raise RuntimeError("cut off")

    monkeypatch.setattr("converters.gguf_to_mlx.convert_gguf", broken)
    manifest = import_gguf(store, gguf_file, model_id="tiny")
    with pytest.raises(RuntimeError):
        mlx_model_dir(store, manifest)
    assert not converted_dir(store, manifest).exists()


def test_removing_the_model_removes_its_conversion(store: ModelStore, gguf_file: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("converters.gguf_to_mlx.convert_gguf", _fake_convert([]))
    manifest = import_gguf(store, gguf_file, model_id="tiny")
    folder = mlx_model_dir(store, manifest)
    assert store.remove("tiny")
    assert not folder.exists()


def test_mlx_model_is_its_own_folder(store: ModelStore, tmp_path: Path) -> None:
    with store.staging("mlxm") as staged:
        model = staged / "m"
        model.mkdir()
        (model / "config.json").write_text("{}")
        manifest = store.install(model, new_manifest(
            id="mlxm", format="mlx", source="test", file=".", sha256=folder_sha256(model),
            size=staged_size(model)))
    assert mlx_model_dir(store, manifest) == store.model_dir("mlxm")
