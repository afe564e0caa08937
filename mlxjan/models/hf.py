"""`mlxjan pull org/repo[@revision][:file.gguf]`: install a model from the Hugging Face Hub.

Without `:file` the repo is an MLX model (config, safetensors, tokenizer files) installed as a
folder; with it, one GGUF file. The revision is resolved to a commit first, and the manifest's
`source` records it (`hf://org/repo@<sha>[/file]`), so pulling the same commit again is a
no-op. Files download into `<data dir>/downloads/hf/<org>--<repo>/`, which survives a failed
run so the next one resumes; only when every file is complete and verified are they moved
into a staging folder and installed atomically. Pulls are a CLI action: the server never
calls this.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import WeakFileLock  # type: ignore[attr-defined]  # lazy export

from mlxjan.errors import HubUnreachableError, ModelNotFoundOnHubError, ModelStoreError
from mlxjan.models.fetch import id_from_filename, install_gguf
from mlxjan.models.hf_download import HubTarget, download
from mlxjan.models.mlx_meta import read_mlx_info
from mlxjan.models.store import (
    Manifest,
    ModelStore,
    file_sha256,
    folder_sha256,
    new_manifest,
    staged_size,
    validate_model_id,
)
from mlxjan.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
# What mlx_lm.load reads from a model folder; README, images and other formats stay behind.
MLX_FILES = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
    "merges.txt", "chat_template.jinja", "chat_template.json", "*.tiktoken",
)
_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[\w])?"
_REF = re.compile(rf"(?:hf://|hf\.co/|https://huggingface\.co/)?(?P<repo>{_NAME}/{_NAME})"
                  r"(?:@(?P<rev>[\w./-]+?))?(?::(?P<file>[^:\s]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HfRef:
    """`org/repo`, optionally pinned to a branch, tag or commit, optionally one GGUF file."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class HubConfig:
    endpoint: str
    token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HubConfig:
        # Read HF_ENDPOINT now: huggingface-hub only reads it once, when first imported.
        endpoint = settings.hf_endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        token = settings.hf_token.get_secret_value() if settings.hf_token else None
        return cls(endpoint.rstrip("/"), token)


@dataclass(frozen=True)
class _Snapshot:
    commit: str
    sha256: dict[str, str | None]  # every file in the repo -> its LFS sha256, if it has one


def parse_hf_ref(source: str) -> HfRef | None:
    """The Hub reference in `source`, or None when it is not one (a catalog id, a path)."""
    match = _REF.fullmatch(source.strip())
    if match is None or ".." in match["repo"] or "--" in match["repo"]:
        return None
    if match["file"] is None and source.lower().endswith(".gguf"):
        return None  # `dir/model.gguf` is a local path; a Hub GGUF is `org/repo:model.gguf`
    return HfRef(match["repo"], match["rev"], match["file"])


def default_model_id(ref: HfRef) -> str:
    name = PurePosixPath(ref.filename).name if ref.filename else ref.repo_id.split("/")[1]
    return id_from_filename(name)


def pull_hf(store: ModelStore, ref: HfRef, hub: HubConfig, *, model_id: str | None = None,
            progress: bool = True) -> Manifest:
    """Install `ref` from the Hub (a no-op when the same commit is installed under that id)."""
    if ref.filename is not None and not ref.filename.lower().endswith(".gguf"):
        raise ModelStoreError(f"'{ref.filename}': only .gguf files can be pulled one by one; "
                              f"pull `{ref.repo_id}` without ':file' for an MLX model")
    model_id = validate_model_id(model_id or default_model_id(ref))
    existing = store.get(model_id)
    if existing is not None and ref.revision is not None and _COMMIT.fullmatch(ref.revision) \
            and existing.source == _source(ref.repo_id, ref.revision, ref.filename):
        log.info("%s is already installed from %s", model_id, existing.source)
        return existing
    try:
        snapshot = _resolve(ref, hub)
    except HubUnreachableError:
        if existing is None or not _same_origin(existing, ref):
            raise
        log.warning("the Hub is unreachable; keeping the installed %s (%s)", model_id,
                    existing.source)
        return existing
    source = _source(ref.repo_id, snapshot.commit, ref.filename)
    if existing is not None and existing.source == source:
        log.info("%s is already installed from %s", model_id, source)
        return existing
    names = [_gguf_name(ref, snapshot)] if ref.filename else _mlx_names(ref, snapshot)
    return _download_and_install(store, ref, hub, snapshot, names, model_id=model_id,
                                 source=source, progress=progress)


def _download_and_install(store: ModelStore, ref: HfRef, hub: HubConfig, snapshot: _Snapshot,
                          names: list[str], *, model_id: str, source: str,
                          progress: bool) -> Manifest:
    area = store.root / "downloads" / "hf" / ref.repo_id.replace("/", "--")
    area.mkdir(parents=True, exist_ok=True)
    target = HubTarget(hub.endpoint, hub.token, ref.repo_id, snapshot.commit)
    log.info("pulling %s@%s: %s", ref.repo_id, snapshot.commit, ", ".join(names))
    # Two pulls of one repo at once would append to the same partial files.
    with WeakFileLock(area.parent / f"{area.name}.lock"):
        with _hub_errors(ref, hub.endpoint):
            blobs = {name: download(target, name, area, expected_sha256=snapshot.sha256[name],
                                    progress=progress) for name in names}
        if ref.filename is not None:
            manifest = _install_gguf(store, blobs[ref.filename], model_id=model_id,
                                     source=source, filename=PurePosixPath(ref.filename).name)
        else:
            manifest = _install_mlx(store, blobs, model_id=model_id, source=source)
        shutil.rmtree(area, ignore_errors=True)
    return manifest


def _install_gguf(store: ModelStore, blob: Path, *, model_id: str, source: str,
                  filename: str) -> Manifest:
    with store.staging(model_id) as stage:
        target = stage / filename
        os.replace(blob, target)
        # The blob is named by its verified etag: for an LFS file, that is its sha256.
        sha256 = blob.name if len(blob.name) == 64 else file_sha256(target)
        return install_gguf(store, stage, target, model_id=model_id, source=source,
                            sha256=sha256)


def _install_mlx(store: ModelStore, blobs: dict[str, Path], *, model_id: str,
                 source: str) -> Manifest:
    with store.staging(model_id) as stage:
        placed: dict[Path, Path] = {}
        for name, blob in blobs.items():
            if blob in placed:  # two files with the same content share one blob
                shutil.copyfile(placed[blob], stage / name)
            else:
                os.replace(blob, stage / name)
                placed[blob] = stage / name
        info = read_mlx_info(stage)
        manifest = new_manifest(
            id=model_id, format="mlx", source=source, file=".", sha256=folder_sha256(stage),
            size=staged_size(stage), architecture=info.architecture,
            context_length=info.context_length, chat_template=info.chat_template,
            kind=info.kind,
        )
        return store.install(stage, manifest)


def _resolve(ref: HfRef, hub: HubConfig) -> _Snapshot:
    if _offline():
        raise HubUnreachableError(f"cannot pull {ref.repo_id}: HF_HUB_OFFLINE is set")
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    with _hub_errors(ref, hub.endpoint):
        info = api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True,
                              timeout=60)
    if not info.sha or not _COMMIT.fullmatch(info.sha):
        raise ModelStoreError(f"the Hub at {hub.endpoint} gave no commit for {ref.repo_id}")
    files = {s.rfilename: (s.lfs.sha256 if s.lfs else None) for s in info.siblings or []}
    return _Snapshot(info.sha, files)


def _mlx_names(ref: HfRef, snapshot: _Snapshot) -> list[str]:
    # Top level only: mlx_lm reads nothing from subfolders, and a name with '/' never
    # becomes a path in the staging folder.
    names = sorted(n for n in snapshot.sha256
                   if "/" not in n and any(fnmatch.fnmatchcase(n, p) for p in MLX_FILES))
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return names
    ggufs = _ggufs(snapshot)
    if ggufs:
        raise ModelNotFoundOnHubError(
            f"{ref.repo_id} has no MLX weights but GGUF files; pull one with "
            f"`mlxjan pull {ref.repo_id}:{ggufs[0]}` (others: {', '.join(ggufs[1:4]) or '-'})")
    raise ModelNotFoundOnHubError(f"{ref.repo_id} has no config.json and .safetensors "
                                  "weights: not an MLX model repo")


def _gguf_name(ref: HfRef, snapshot: _Snapshot) -> str:
    assert ref.filename is not None
    if ref.filename in snapshot.sha256:
        return ref.filename
    ggufs = ", ".join(_ggufs(snapshot)[:6]) or "none"
    raise ModelNotFoundOnHubError(f"{ref.repo_id}@{snapshot.commit[:12]} has no file "
                                  f"'{ref.filename}' (GGUF files: {ggufs})")


def _ggufs(snapshot: _Snapshot) -> list[str]:
    return sorted(n for n in snapshot.sha256 if n.lower().endswith(".gguf"))


def _source(repo_id: str, commit: str, filename: str | None) -> str:
    return f"hf://{repo_id}@{commit}" + (f"/{filename}" if filename else "")


def _same_origin(manifest: Manifest, ref: HfRef) -> bool:
    """Installed from the same repo (and file), at whatever commit `ref` may stand for."""
    if ref.revision is not None and _COMMIT.fullmatch(ref.revision):
        return False  # a pinned commit that differs from the installed one
    tail = f"/{re.escape(ref.filename)}" if ref.filename else ""
    pattern = f"hf://{re.escape(ref.repo_id)}@[0-9a-f]{{40}}{tail}"
    return re.fullmatch(pattern, manifest.source) is not None


def _offline() -> bool:
    # huggingface-hub reads HF_HUB_OFFLINE once at import; honour a later setting too.
    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return env or constants.is_offline_mode()


@contextlib.contextmanager
def _hub_errors(ref: HfRef, endpoint: str) -> Iterator[None]:
    """huggingface-hub's and httpx2's exceptions, as typed one-line mlxjan errors."""
    try:
        yield
    except OfflineModeIsEnabled as exc:
        raise HubUnreachableError(f"cannot pull {ref.repo_id}: HF_HUB_OFFLINE is set") from exc
    except RemoteEntryNotFoundError as exc:
        raise ModelNotFoundOnHubError(f"{ref.repo_id} has no file '{ref.filename}'") from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFoundOnHubError(
            f"{ref.repo_id} has no revision '{ref.revision}'") from exc
    except GatedRepoError as exc:
        raise ModelNotFoundOnHubError(f"{ref.repo_id} is gated: accept its terms on the Hub, "
                                      "then set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundOnHubError(f"no model repo '{ref.repo_id}' on {endpoint} "
                                      "(a private repo needs HF_TOKEN)") from exc
    except HfHubHTTPError as exc:
        raise HubUnreachableError(
            f"the Hub at {endpoint} answered HTTP {exc.response.status_code}; try again "
            "later (a partial download resumes)") from exc
    except httpx2.TransportError as exc:
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}: "
            f"{_first_line(exc)}); a partial download resumes on the next pull") from exc
    except FileMetadataError as exc:
        raise ModelStoreError(f"{endpoint} does not answer like a Hugging Face Hub "
                              "(no X-Repo-Commit header)") from exc
    except OSError as exc:  # disk full, or a size check in huggingface-hub's http_get
        raise ModelStoreError(f"downloading {ref.repo_id} failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
