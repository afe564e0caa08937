"""Running the server process: logging, start-up checks, uvicorn, graceful shutdown.

The process never daemonises: launchd or systemd supervise it. SIGTERM (uvicorn's handler)
stops accepting, gives in-flight requests a few seconds, cancels the rest and exits 0.
"""

from __future__ import annotations

import http.client
import json
import logging
import logging.handlers
import signal
import socket
import sys
import urllib.error
import urllib.request
from types import FrameType
from typing import Literal

import uvicorn

from mlxjan.errors import MlxjanError
from mlxjan.models.fetch import ensure_model
from mlxjan.models.store import ModelStore
from mlxjan.server.security import check_bind
from mlxjan.settings import Settings

log = logging.getLogger("mlxjan")
GRACEFUL_SHUTDOWN_SECONDS = 5  # leaves time to unload within launchd's ExitTimeOut
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PortState = Literal["free", "mlxjan", "other"]


class SupervisedServer(uvicorn.Server):
    """SIGTERM is a supervisor's normal stop: after the graceful shutdown the process exits
    0, instead of uvicorn re-raising the signal (status "killed by SIGTERM", which launchd
    and systemd count as a failure)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            self._captured_signals.remove(sig)


class PortInUseError(MlxjanError):
    code = "port_in_use"


def configure_logging(settings: Settings) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            settings.log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"))
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, handlers=handlers,
                        force=True)


def local_json(host: str, port: int, path: str, api_key: str | None = None) -> object:
    """GET a JSON document from a server on this machine; raises OSError/ValueError."""
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host.strip("[]")
    url_host = f"[{target}]" if ":" in target else target
    request = urllib.request.Request(f"http://{url_host}:{port}{path}")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    # Straight to the port: a proxy from the environment (http_proxy) must not get it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=2) as resp:
            return json.loads(resp.read())
    except http.client.HTTPException as exc:  # it answers, but not in HTTP (BadStatusLine)
        raise OSError(str(exc)) from exc


def port_state(host: str, port: int) -> PortState:
    """Whether `port` is free, held by a healthy mlxjan, or held by something else."""
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host.strip("[]")
    try:
        with socket.create_connection((target, port), timeout=1):
            pass
    except OSError:
        return "free"
    try:
        body = local_json(host, port, "/health")
    except (OSError, ValueError):
        return "other"
    return "mlxjan" if isinstance(body, dict) and body.get("name") == "mlxjan" else "other"


def ps(settings: Settings) -> int:
    """Print what the running server holds: loaded models and requests in flight."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    try:
        status = local_json(settings.host, settings.port, f"{settings.api_prefix}/status", key)
    except (OSError, ValueError) as exc:
        print(f"no mlxjan answering on {settings.host}:{settings.port} ({exc})")
        return 1
    assert isinstance(status, dict)
    requests = status.get("requests", {})
    print(f"requests: {requests.get('active')} running or waiting (limit {requests.get('limit')})")
    models = status.get("models") or []
    print(f"{'MODEL':40} {'ENGINE':9} {'LOADED':6} {'CONTEXT':>8}  PROMPT CACHE")
    for m in models:
        print(f"{m.get('model', '?'):40} {m.get('engine', '?'):9} "
              f"{'yes' if m.get('loaded') else 'no':6} {m.get('context_length', '-'):>8}  "
              f"{_cache_line(m.get('prompt_cache') or {})}")
        batch = m.get("batch")
        if isinstance(batch, dict):
            print(f"{'':40} batch: {batch.get('running')} of {batch.get('max')} running")
    return 0


def _cache_line(cache: dict[str, float]) -> str:
    if not cache:
        return "-"
    line = (f"{cache.get('entries', 0)} entries, {cache.get('bytes', 0) / 2**20:.0f} MiB, "
            f"{cache.get('hits', 0)} hits / {cache.get('misses', 0)} misses")
    if cache.get("disk_entries"):
        line += (f"; disk {cache.get('disk_entries')} entries, "
                 f"{cache.get('disk_bytes', 0) / 2**20:.0f} MiB, {cache.get('disk_hits')} hits")
    return line


def serve(settings: Settings) -> int:
    from mlxjan.server.app import create_app

    check_bind(settings)
    state = port_state(settings.host, settings.port)
    if state == "mlxjan":
        # Exit 0 so that a supervisor (launchd KeepAlive) does not respawn in a loop.
        log.info("mlxjan is already running on %s:%d; nothing to do", settings.host,
                 settings.port)
        return 0
    if state == "other":
        raise PortInUseError(f"port {settings.port} on {settings.host} is in use by another "
                             "program; choose another with --port")
    ensure_model(ModelStore(settings.data_dir), settings.default_model)
    app = create_app(settings)
    log.info("serving on http://%s:%d%s", settings.host, settings.port, settings.api_prefix)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            log_level=settings.log_level,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    SupervisedServer(config).run()
    return 0
