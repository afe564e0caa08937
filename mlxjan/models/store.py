"""The on-disk model store: `<data dir>/models/<id>/` holding the weights and `manifest.json`.

A model is installed exactly when its folder holds a valid manifest. Files are assembled in
`<data dir>/staging/`, the folder is renamed into place, and the manifest is written last
(atomically), so an interrupted fetch never leaves an installed-looking model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mlxjan.errors import InvalidModelIdError, ModelStoreError
from mlxjan.types import ModelKind

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_model_id(model_id: str) -> str:
    """Return the id if it can safely name a folder; raise otherwise (no traversal)."""
    if not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise InvalidModelIdError(model_id)
    return model_id


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    format: Literal["gguf", "mlx"]
    source: str
    file: str  # the GGUF file's name; "." for an MLX model, whose folder is the model
    sha256: str
    size: int
    created: int
    architecture: str | None = None
    context_length: int | None = None
    chat_template: str | None = None
    kind: ModelKind = "chat"  # manifests written before embeddings read as chat
    matryoshka: bool = False  # an embedding model whose vectors may be cut short


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.models_dir = root / "models"
        self.staging_dir = root / "staging"

    def model_dir(self, model_id: str) -> Path:
        return self.models_dir / validate_model_id(model_id)

    def get(self, model_id: str) -> Manifest | None:
        """The manifest of an installed model, or None (also for an invalid id)."""
        try:
            folder = self.model_dir(model_id)
        except InvalidModelIdError:
            return None
        return _read_manifest(folder / MANIFEST)

    def list(self) -> list[Manifest]:
        if not self.models_dir.is_dir():
            return []
        found = (_read_manifest(d / MANIFEST) for d in sorted(self.models_dir.iterdir()))
        return [m for m in found if m is not None]

    def weights_path(self, manifest: Manifest) -> Path:
        """The GGUF file, or for an MLX model its folder (config, safetensors, tokenizer)."""
        return self.model_dir(manifest.id) / manifest.file

    def remove(self, model_id: str) -> bool:
        folder = self.model_dir(model_id)
        if not folder.exists():
            return False
        manifest = self.get(model_id)
        # Drop the manifest first: a crash half-way leaves a folder that is not installed.
        (folder / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(folder)
        if manifest is not None and all(m.sha256 != manifest.sha256 for m in self.list()):
            self._remove_conversions(manifest.sha256)
        return True

    def conversions_dir(self, sha256: str) -> Path:
        """Where other-format copies of a weights file live (e.g. a GGUF converted to MLX)."""
        return self.root / "converted" / sha256[:16]

    def _remove_conversions(self, sha256: str) -> None:
        shutil.rmtree(self.conversions_dir(sha256), ignore_errors=True)

    @contextlib.contextmanager
    def staging(self, model_id: str) -> Iterator[Path]:
        """A fresh folder to assemble a model in, removed if the block fails."""
        validate_model_id(model_id)
        self._clean_stale_staging()
        folder = self.staging_dir / f"{model_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def install(self, staged: Path, manifest: Manifest) -> Manifest:
        """Move a staged folder into place, then write its manifest (last, atomically)."""
        final = self.model_dir(manifest.id)
        if staged_size(staged / manifest.file) != manifest.size:
            raise ModelStoreError(f"staged file for {manifest.id} has the wrong size")
        if final.exists():
            self.remove(manifest.id)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        _write_atomic(final / MANIFEST, manifest.model_dump_json(indent=2))
        log.info("installed %s (%d bytes)", manifest.id, manifest.size)
        return manifest

    def _clean_stale_staging(self) -> None:
        if not self.staging_dir.is_dir():
            return
        for folder in self.staging_dir.iterdir():
            pid = folder.name.rsplit(".", 2)[-2] if folder.name.count(".") >= 2 else ""
            if not pid.isdigit() or not _pid_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)


def staged_size(path: Path) -> int:
    """Bytes of a weights file, or of every file under an MLX model folder."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def folder_sha256(folder: Path) -> str:
    """One digest for an MLX model folder: sha256 over each file's relative name and digest."""
    outer = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        outer.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return outer.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def new_manifest(**fields: object) -> Manifest:
    return Manifest.model_validate({"created": int(time.time()), **fields})


def _read_manifest(path: Path) -> Manifest | None:
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable manifest %s: %s", path, exc)
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
