"""A local stand-in for the Hugging Face Hub, for tests of `mlxjan pull org/repo`.

It serves repos from local folders through the endpoints huggingface-hub 2.x calls: model
info (`/api/models/{repo}[/revision/{rev}]`, with sizes and LFS digests under `?blobs=true`),
the tree listing (`/api/models/{repo}/tree/{rev}`), and `HEAD`/`GET /{repo}/resolve/{rev}/{file}`
with the Hub's headers (`X-Repo-Commit`, `ETag`, `X-Linked-Etag`/`X-Linked-Size` for LFS files)
and `Range: bytes=N-` answered with 206. Errors carry the Hub's `X-Error-Code`. It never sends
Xet headers, so clients use plain HTTP.

Every request is logged (method, path, Range header, body bytes sent), and a download can be
cut off after N bytes, after which the stand-in answers 503 until `restore()`: together they
let a test interrupt a pull and check that the next one resumes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

# Kept in Git LFS on the real Hub (by the default .gitattributes): large binary weights.
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".npz")
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class HubFile:
    path: Path
    size: int
    sha256: str
    lfs: bool
    git_oid: str  # the git blob id (for an LFS file, the id of its pointer file)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Commit:
    sha: str
    files: Mapping[str, HubFile]


@dataclass
class LoggedRequest:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int = 0


@dataclass
class HubStandIn:
    """Repos by id, each a map of revision names (branches and commit shas) to commits."""

    repos: dict[str, dict[str, Commit]] = field(default_factory=dict)
    requests: list[LoggedRequest] = field(default_factory=list)
    down: bool = False
    _cut: tuple[str, int] | None = None

    def add_commit(self, repo_id: str, folder: Path, *, branch: str = "main") -> str:
        """Publish the files under `folder` as a new commit on `branch`; return its sha."""
        files = {p.relative_to(folder).as_posix(): _hub_file(p)
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        listing = "".join(f"{name} {f.etag}\n" for name, f in files.items())
        sha = hashlib.sha1(f"{repo_id}\n{listing}".encode(), usedforsecurity=False).hexdigest()
        commit = Commit(sha, files)
        revisions = self.repos.setdefault(repo_id, {})
        revisions[sha] = revisions[branch] = commit
        return sha

    def cut_off(self, filename: str, after_bytes: int) -> None:
        """Drop the connection of the next download of `filename` after `after_bytes` bytes of
        its body; the stand-in then answers 503 to everything until `restore()`."""
        self._cut = (filename, after_bytes)

    def restore(self) -> None:
        self._cut = None
        self.down = False

    def served(self, filename: str) -> list[LoggedRequest]:
        """The GET requests that downloaded `filename`, in order."""
        return [r for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(f"/{filename}")]

    def app(self) -> FastAPI:
        app = FastAPI(title="Hugging Face Hub stand-in")
        app.add_api_route("/api/models/{org}/{name}", self._info, methods=["GET"])
        app.add_api_route("/api/models/{org}/{name}/revision/{revision:path}", self._info,
                          methods=["GET"])
        app.add_api_route("/api/models/{org}/{name}/tree/{revision:path}", self._tree,
                          methods=["GET"])
        app.add_api_route("/{org}/{name}/resolve/{revision}/{filename:path}", self._resolve,
                          methods=["GET", "HEAD"])
        return app

    # --- routes ----------------------------------------------------------------------------

    def _info(self, request: Request, org: str, name: str, revision: str = "main",
              blobs: bool = False) -> Response:
        found = self._lookup(request, f"{org}/{name}", revision)
        if isinstance(found, Response):
            return found
        siblings = [_sibling(path, f, blobs) for path, f in found.files.items()]
        return self._log(request, JSONResponse({
            "_id": found.sha, "id": f"{org}/{name}", "modelId": f"{org}/{name}",
            "sha": found.sha, "private": False, "disabled": False, "gated": False,
            "tags": [], "siblings": siblings,
        }))

    def _tree(self, request: Request, org: str, name: str, revision: str) -> Response:
        found = self._lookup(request, f"{org}/{name}", revision)
        if isinstance(found, Response):
            return found
        entries = [{"type": "file", "path": path, "oid": f.git_oid, "size": f.size,
                    **({"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}}
                       if f.lfs else {})} for path, f in found.files.items()]
        return self._log(request, JSONResponse(entries))

    def _resolve(self, request: Request, org: str, name: str, revision: str,
                 filename: str) -> Response:
        found = self._lookup(request, f"{org}/{name}", revision)
        if isinstance(found, Response):
            return found
        hub_file = found.files.get(filename)
        if hub_file is None:
            return self._log(request, _error(404, "EntryNotFound", f"no file {filename}",
                                              {"X-Repo-Commit": found.sha}))
        cut = self._cut[1] if self._cut and self._cut[0] == filename else None
        logged = LoggedRequest(request.method, request.url.path, request.headers.get("range"), 0)
        self.requests.append(logged)
        return _FileResponse(hub_file, found.sha, request.method, logged,
                             cut_after=cut if request.method == "GET" else None,
                             on_cut=self._went_down)

    # --- helpers ---------------------------------------------------------------------------

    def _lookup(self, request: Request, repo_id: str, revision: str) -> Commit | Response:
        if self.down:
            return self._log(request, _error(503, None, "the Hub is down"))
        revisions = self.repos.get(repo_id)
        if revisions is None:
            return self._log(request, _error(404, "RepoNotFound", f"no repo {repo_id}"))
        commit = revisions.get(revision)
        if commit is None:
            return self._log(request, _error(404, "RevisionNotFound", f"no revision {revision}"))
        return commit

    def _log(self, request: Request, response: Response) -> Response:
        self.requests.append(LoggedRequest(request.method, request.url.path,
                                           request.headers.get("range"), response.status_code))
        return response

    def _went_down(self) -> None:
        self._cut = None
        self.down = True


class _FileResponse(Response):
    """A file, whole or from `Range: bytes=N-`, optionally cut off mid-body."""

    def __init__(self, hub_file: HubFile, commit: str, method: str, logged: LoggedRequest, *,
                 cut_after: int | None, on_cut: Callable[[], None]) -> None:
        super().__init__()
        self.hub_file, self.method, self.logged = hub_file, method, logged
        self.cut_after, self.on_cut = cut_after, on_cut
        self.hub_headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{hub_file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if hub_file.lfs:
            self.hub_headers |= {"X-Linked-Etag": f'"{hub_file.sha256}"',
                                 "X-Linked-Size": str(hub_file.size)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = self.hub_file.size
        start = _range_start(self.logged.range)
        if start is not None and start >= size:
            self.logged.status = 416
            await _start(send, 416, {**self.hub_headers, "Content-Range": f"bytes */{size}"})
            await send({"type": "http.response.body", "body": b""})
            return
        status, headers = 200, {**self.hub_headers, "Content-Length": str(size)}
        if start is not None:
            status = 206
            headers |= {"Content-Length": str(size - start),
                        "Content-Range": f"bytes {start}-{size - 1}/{size}"}
        self.logged.status = status
        await _start(send, status, headers)
        if self.method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        await self._send_body(send, start or 0)

    async def _send_body(self, send: Send, start: int) -> None:
        budget = self.cut_after
        with open(self.hub_file.path, "rb") as fh:
            fh.seek(start)
            while chunk := fh.read(_CHUNK):
                if budget is not None and len(chunk) >= budget:
                    await send({"type": "http.response.body", "body": chunk[:budget],
                                "more_body": True})
                    self.logged.body_bytes += budget
                    self.on_cut()
                    return  # uvicorn closes a connection whose response was left unfinished
                if budget is not None:
                    budget -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.logged.body_bytes += len(chunk)
        await send({"type": "http.response.body", "body": b""})


async def _start(send: Send, status: int, headers: dict[str, str]) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})


def _range_start(header: str | None) -> int | None:
    """N from `bytes=N-` (huggingface-hub only ever resumes to the end of the file)."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    value = header[len("bytes="):-1]
    return int(value) if value.isdigit() else None


def _error(status: int, code: str | None, message: str,
           headers: dict[str, str] | None = None) -> Response:
    extra = {"X-Error-Code": code} if code else {}
    return JSONResponse({"error": message}, status_code=status,
                        headers={**extra, "X-Error-Message": message, **(headers or {})})


def _sibling(path: str, f: HubFile, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    lfs = {"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}} if f.lfs else {}
    return {"rfilename": path, "size": f.size, "blobId": f.git_oid, **lfs}


def _hub_file(path: Path) -> HubFile:
    data_sha256, git = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
    size = path.stat().st_size
    git.update(f"blob {size}\0".encode())
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            data_sha256.update(chunk)
            git.update(chunk)
    lfs = path.name.endswith(LFS_SUFFIXES)
    sha256 = data_sha256.hexdigest()
    # For an LFS file git holds a pointer; any stable stand-in id for it will do.
    oid = hashlib.sha1(f"lfs {sha256}".encode(), usedforsecurity=False).hexdigest() if lfs \
        else git.hexdigest()
    return HubFile(path, size, sha256, lfs, oid)
