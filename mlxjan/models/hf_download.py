"""Resumable, verified download of one Hugging Face Hub file into a persistent download area.

huggingface-hub 2.x deletes a partial file when `hf_hub_download` fails (its temp files are
process-unique), so a pull cut off at 90 % would start again from zero. Here each file goes
to `<area>/<etag>.part`, which survives a failed or interrupted run; the next run asks for
the rest with `Range: bytes=N-` through huggingface-hub's own `http_get`. A finished file is
verified against its etag (sha256 for LFS files, git blob sha1 otherwise) and renamed to
`<area>/<etag>`, so anything without `.part` is complete and correct.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import get_hf_file_metadata, get_token, hf_hub_url
from huggingface_hub.file_download import http_get
from tqdm import tqdm

from mlxjan.errors import ModelStoreError

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubTarget:
    """Where to download from: the endpoint, the token, the repo at a resolved commit."""

    endpoint: str
    token: str | None
    repo_id: str
    commit: str


class _SilentBar(tqdm):  # type: ignore[type-arg]
    """What huggingface-hub gets as its progress bar class under --quiet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def download(target: HubTarget, filename: str, area: Path, *, expected_sha256: str | None,
             progress: bool) -> Path:
    """The verified file `filename` of the repo, resuming any partial download in `area`."""
    url = hf_hub_url(target.repo_id, filename, revision=target.commit, endpoint=target.endpoint)
    meta = get_hf_file_metadata(url, token=target.token, endpoint=target.endpoint)
    etag = meta.etag or ""
    if not (_SHA256.fullmatch(etag) or _GIT_SHA1.fullmatch(etag)):
        # The etag names the file on disk and is the digest it is checked against.
        raise ModelStoreError(f"the Hub gave {filename} an unexpected ETag {etag[:80]!r}")
    if expected_sha256 is not None and _SHA256.fullmatch(etag) and etag != expected_sha256:
        raise ModelStoreError(f"{filename}: the Hub lists sha256 {expected_sha256} "
                              f"but serves {etag}")
    done = area / etag
    if done.is_file():
        log.info("%s: already downloaded", filename)
        return done
    part = area / f"{etag}.part"
    _fetch(meta.location, part, target, size=meta.size, label=filename, progress=progress)
    _verify(part, etag, filename)
    os.replace(part, done)
    return done


def _fetch(location: str, part: Path, target: HubTarget, *, size: int | None, label: str,
           progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()  # not a prefix of this file; start over
        have = 0
    if have:
        log.info("%s: resuming after %d bytes", label, have)
    # The token goes to the Hub only, never to a CDN it redirects to (signed URLs).
    token = target.token or get_token()
    same_host = urlsplit(location).netloc == urlsplit(target.endpoint).netloc
    headers = {"authorization": f"Bearer {token}"} if token and same_host else {}
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "r+b" if have else "wb") as fh:
        fh.seek(have)
        http_get(location, fh, resume_size=have, headers=headers, expected_size=size,
                 displayed_filename=label, tqdm_class=None if progress else _SilentBar)


def _verify(path: Path, etag: str, label: str) -> None:
    if _SHA256.fullmatch(etag):
        digest = _digest(path, hashlib.sha256())
    else:
        # A file kept in git (not LFS): its etag is the git blob id.
        digest = _digest(path, hashlib.sha1(f"blob {path.stat().st_size}\0".encode(),
                                            usedforsecurity=False))
    if digest != etag:
        path.unlink()  # corrupt; the next pull fetches it afresh
        raise ModelStoreError(f"{label}: downloaded content has digest {digest}, "
                              f"expected {etag}; run the pull again")


def _digest(path: Path, digest: hashlib._Hash) -> str:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    result: str = digest.hexdigest()
    return result
