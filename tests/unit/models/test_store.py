"""The on-disk store: safe ids, manifests, listing and removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlxjan.errors import InvalidModelIdError, ModelStoreError
from mlxjan.models.store import MANIFEST, Manifest, ModelStore, new_manifest, validate_model_id


def install_fake(store: ModelStore, model_id: str, payload: bytes = b"weights") -> Manifest:
    with store.staging(model_id) as stage:
        (stage / "model.gguf").write_bytes(payload)
        manifest = new_manifest(id=model_id, format="gguf", source="test", file="model.gguf",
                                sha256="0" * 64, size=len(payload))
        return store.install(stage, manifest)


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "..", "", ".hidden", "a..b", "/abs", "a\\b", "-dash", "x" * 129,
            "name with space", "a\x00b"],
)
def test_validate_model_id_rejects_unsafe_names(bad: str) -> None:
    with pytest.raises(InvalidModelIdError) as info:
        validate_model_id(bad)
    assert info.value.param == "model"


@pytest.mark.parametrize(
    "good", ["qwen2.5-coder-0.5b-instruct", "gemma-3-270m", "Model_1", "a", "x" * 128],
)
def test_validate_model_id_accepts_plain_names(good: str) -> None:
    assert validate_model_id(good) == good


def test_model_dir_refuses_traversal(store: ModelStore) -> None:
    with pytest.raises(InvalidModelIdError):
        store.model_dir("../escape")


def test_empty_store_lists_nothing(store: ModelStore) -> None:
    assert store.list() == []
    assert store.get("anything") is None
    assert store.get("../bad") is None


def test_install_then_get_list_and_weights_path(store: ModelStore) -> None:
    manifest = install_fake(store, "m1", b"12345")
    assert store.get("m1") == manifest
    assert [m.id for m in store.list()] == ["m1"]
    assert store.weights_path(manifest).read_bytes() == b"12345"
    on_disk = json.loads((store.models_dir / "m1" / MANIFEST).read_text())
    assert on_disk["id"] == "m1"
    assert on_disk["size"] == 5
    # Staging folders are gone once installed; no stray temp manifest either.
    assert list(store.staging_dir.iterdir()) == []
    assert not (store.models_dir / "m1" / (MANIFEST + ".tmp")).exists()


def test_install_refuses_wrong_size(store: ModelStore) -> None:
    with pytest.raises(ModelStoreError), store.staging("m1") as stage:
        (stage / "model.gguf").write_bytes(b"abc")
        store.install(stage, new_manifest(id="m1", format="gguf", source="t",
                                          file="model.gguf", sha256="0" * 64, size=99))
    assert store.get("m1") is None
    assert not (store.models_dir / "m1").exists()
    assert list(store.staging_dir.iterdir()) == []


def test_install_replaces_an_existing_model(store: ModelStore) -> None:
    install_fake(store, "m1", b"old")
    new = install_fake(store, "m1", b"newer")
    assert store.get("m1") == new
    assert store.weights_path(new).read_bytes() == b"newer"
    assert len(store.list()) == 1


def test_list_ignores_folders_without_manifest_and_corrupt_manifests(store: ModelStore) -> None:
    install_fake(store, "good")
    (store.models_dir / "no-manifest").mkdir()
    (store.models_dir / "no-manifest" / "model.gguf").write_bytes(b"x")
    (store.models_dir / "corrupt").mkdir()
    (store.models_dir / "corrupt" / MANIFEST).write_text("{not json")
    (store.models_dir / "incomplete").mkdir()
    (store.models_dir / "incomplete" / MANIFEST).write_text(json.dumps({"id": "incomplete"}))
    (store.models_dir / "wrong-format").mkdir()
    (store.models_dir / "wrong-format" / MANIFEST).write_text(json.dumps({
        "id": "wrong-format", "format": "safetensors", "source": "s", "file": "f",
        "sha256": "0", "size": 1, "created": 0}))
    assert [m.id for m in store.list()] == ["good"]
    for broken in ("no-manifest", "corrupt", "incomplete", "wrong-format"):
        assert store.get(broken) is None


def test_remove(store: ModelStore) -> None:
    install_fake(store, "gone")
    install_fake(store, "kept")
    assert store.remove("gone") is True
    assert not (store.models_dir / "gone").exists()
    assert store.get("gone") is None
    assert [m.id for m in store.list()] == ["kept"]
    assert store.remove("gone") is False


def test_remove_refuses_traversal(store: ModelStore, tmp_path: Path) -> None:
    victim = tmp_path / "data" / "victim"
    victim.mkdir(parents=True)
    with pytest.raises(InvalidModelIdError):
        store.remove("../victim")
    assert victim.exists()


def test_failed_staging_block_leaves_nothing(store: ModelStore) -> None:
    with pytest.raises(RuntimeError), store.staging("m1") as stage:
        (stage / "partial.gguf").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(store.staging_dir.iterdir()) == []
    assert store.get("m1") is None


def test_stale_staging_from_dead_processes_is_cleaned(store: ModelStore) -> None:
    store.staging_dir.mkdir(parents=True)
    # A pid that cannot be alive (above the kernel's pid_max) and a malformed name.
    dead = store.staging_dir / "m1.999999999.deadbeef"
    junk = store.staging_dir / "junk"
    dead.mkdir()
    junk.mkdir()
    with store.staging("m2") as stage:
        assert sorted(p.name for p in store.staging_dir.iterdir()) == [stage.name]
