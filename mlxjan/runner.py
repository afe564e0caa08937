"""Running the server process: logging, start-up checks, uvicorn, graceful shutdown.

The process never daemonises: launchd or systemd supervise it. SIGTERM (uvicorn's handler)
stops accepting, gives in-flight requests a few seconds, cancels the rest and exits 0.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import logging.handlers
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
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
# `mlxjan serve` exits with this when another program holds its port (and it is not told to
# wait): a scripted start can tell it apart from other failures (1) and bad settings (2).
EXIT_PORT_IN_USE = 3
# --wait-for-port: probe again after 0.5 s, doubling up to every 5 s; say so again every 5 min.
PORT_RETRY_FIRST = 0.5
PORT_RETRY_MAX = 5.0
PORT_WAIT_LOG_EVERY = 300.0


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


class BindError(MlxjanError):
    code = "bind_failed"


def configure_logging(settings: Settings) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            settings.log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"))
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, handlers=handlers,
                        force=True)


def local_json(host: str, port: int, path: str, api_key: str | None = None, *,
               post: bool = False, timeout: float = 2) -> object:
    """GET (or POST, empty) a JSON document from a server on this machine; raises
    OSError/ValueError."""
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host.strip("[]")
    url_host = f"[{target}]" if ":" in target else target
    request = urllib.request.Request(f"http://{url_host}:{port}{path}",
                                     data=b"" if post else None)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    # Straight to the port: a proxy from the environment (http_proxy) must not get it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as resp:
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
    if isinstance(status.get("budget"), dict):
        print(_budget_line(status["budget"]))
    models = status.get("models") or []
    print(f"{'MODEL':40} {'ENGINE':9} {'LOADED':6} {'CONTEXT':>8}  PROMPT CACHE")
    for m in models:
        print(f"{m.get('model', '?'):40} {m.get('engine', '?'):9} "
              f"{'yes' if m.get('loaded') else 'no':6} {m.get('context_length', '-'):>8}  "
              f"{_cache_line(m.get('prompt_cache') or {})}")
        batch = m.get("batch")
        if isinstance(batch, dict):
            print(f"{'':40} batch: {batch.get('running')} of {batch.get('max')} running")
        if m.get("threads") or m.get("kernels"):
            flash = {True: ", flash attention", False: ", no flash attention"}.get(
                m.get("flash_attention"), "")
            print(f"{'':40} {m.get('threads')} threads{flash}, "
                  f"kernels: {m.get('kernels') or '-'}")
        if isinstance(m.get("worker"), dict):
            print(f"{'':40} {_worker_line(m['worker'])}")
        if isinstance(m.get("residency"), dict):
            print(f"{'':40} {_residency_line(m['residency'], bool(m.get('loaded')))}")
    return 0


def _budget_line(budget: dict[str, object]) -> str:
    return (f"memory: {_gib(budget.get('used_bytes'))} of {_gib(budget.get('bytes'))} GiB "
            f"held by {budget.get('loaded_models')} of at most {budget.get('max_models')} "
            f"models (when full: {budget.get('when_full')})")


def _residency_line(residency: dict[str, object], loaded: bool) -> str:
    line = f"memory: estimated {_mib(residency.get('estimated_bytes'))} MiB"
    if residency.get("measured_bytes"):
        line += f", measured {_mib(residency['measured_bytes'])} MiB"
    expires = residency.get("expires_at")
    if residency.get("pinned"):
        line += "; pinned"
    elif residency.get("requests"):
        line += f"; {residency['requests']} requests holding it"
    elif loaded and isinstance(expires, (int, float)):
        line += f"; unloads in {max(0.0, expires - time.time()):.0f} s if idle"
    elif loaded:
        line += "; stays loaded until unloaded"
    return line


def _gib(value: object) -> str:
    return f"{value / 2**30:.2f}" if isinstance(value, (int, float)) else "?"


def _mib(value: object) -> str:
    return f"{value / 2**20:.0f}" if isinstance(value, (int, float)) else "?"


def _worker_line(worker: dict[str, object]) -> str:
    state = worker.get("state")
    line = f"worker: {state}"
    if worker.get("pid"):
        line += f", pid {worker['pid']}"
    if state == "crashed":
        line += f" ({worker.get('last_exit')}; restarts on the next request)"
    elif state == "failed":
        line += f" ({worker.get('last_error')}; `mlxjan load` to retry)"
    elif worker.get("last_exit"):
        line += f"; last exit: {worker['last_exit']}"
    return line


def load_or_unload(settings: Settings, model_id: str, action: str,
                   keep_alive: str | None = None) -> int:
    """`mlxjan load|unload ID`: ask the running server to start or end a model's worker."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    path = f"{settings.api_prefix}/models/{urllib.parse.quote(model_id, safe='')}/{action}"
    if keep_alive is not None:
        path += "?" + urllib.parse.urlencode({"keep_alive": keep_alive})
    try:
        local_json(settings.host, settings.port, path, key, post=True, timeout=600)
    except urllib.error.HTTPError as exc:
        print(f"mlxjan: {action} {model_id}: {_error_message(exc)}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"no mlxjan answering on {settings.host}:{settings.port} ({exc})",
              file=sys.stderr)
        return 1
    print(f"{model_id}: {'loaded' if action == 'load' else 'unloaded'}")
    return 0


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code}"


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
    # The port first, before the model is fetched or loaded: a held port is found at once.
    sockets = claim_port(settings)
    if sockets is None:
        # Exit 0 so that a supervisor (launchd KeepAlive) does not respawn in a loop.
        log.info("mlxjan is already running on %s:%d; nothing to do", settings.host,
                 settings.port)
        return 0
    try:
        ensure_model(ModelStore(settings.data_dir), settings.default_model)
        app = create_app(settings)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    log.info("serving on http://%s:%d%s", settings.host, settings.port, settings.api_prefix)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            log_level=settings.log_level,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    SupervisedServer(config).run(sockets=sockets)
    return 0


def claim_port(settings: Settings, sleep: Callable[[float], None] = time.sleep
               ) -> list[socket.socket] | None:
    """Bind the server's port, or None when a healthy mlxjan already holds it.

    Held by another program: PortInUseError, or with `wait_for_port` (set in the service
    definitions, so launchd/systemd do not restart us every few seconds) a wait until it is
    free, probing with a backoff and saying so once, then every few minutes.
    """
    host, port = settings.host, settings.port
    held = (f"port {port} on {host} is in use by another program (`lsof -nP "
            f"-iTCP:{port} -sTCP:LISTEN` shows which); stop it, or choose another port with "
            "--port or MLXJAN_PORT")
    delay, said_at = PORT_RETRY_FIRST, 0.0
    waiting_since: float | None = None
    while True:
        state = port_state(host, port)
        if state == "mlxjan":
            return None
        if state == "free":
            try:
                sockets = bind_sockets(host, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise BindError(f"cannot listen on {host}:{port}: "
                                    f"{exc.strerror or exc}") from exc
            else:
                if waiting_since is not None:
                    log.info("port %d on %s is free now, after %.0f s; starting", port, host,
                             time.monotonic() - waiting_since)
                return sockets
        if not settings.wait_for_port:
            raise PortInUseError(held)
        now = time.monotonic()
        if waiting_since is None:
            waiting_since = said_at = now
            log.warning("%s; waiting for it to be free", held)
        elif now - said_at >= PORT_WAIT_LOG_EVERY:
            said_at = now
            log.warning("port %d on %s is still in use by another program; waited %.0f s",
                        port, host, now - waiting_since)
        sleep(delay)
        delay = min(delay * 2, PORT_RETRY_MAX)


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address `host` names, as asyncio's
    create_server would make them; uvicorn listens on them once the app is ready."""
    infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
