"""Start-up of the server process: who holds the port, the bind check, logging to a file."""

from __future__ import annotations

import json
import logging
import logging.handlers
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlxjan import runner
from mlxjan.cli import main
from mlxjan.errors import InsecureBindError
from mlxjan.runner import PortInUseError, configure_logging, port_state, serve
from mlxjan.server.security import check_bind
from mlxjan.settings import Settings
from mlxjan.testing.server import free_port


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLXJAN_HOME", str(tmp_path / "data"))




@contextmanager
def tcp_listener(handle: Callable[[socketserver.BaseRequestHandler], None]) -> Iterator[int]:
    """A loopback TCP server in a thread, each connection given to `handle`; yields its port."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            handle(self)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as server:
        yield from _serve_in_thread(server)


@contextmanager
def http_health(body: bytes, status: int = 200) -> Iterator[int]:
    """A tiny http.server answering every GET with `body`; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        yield from _serve_in_thread(server)


def _serve_in_thread(server: socketserver.BaseServer) -> Iterator[int]:
    """Serve in a thread, yield the port, then shut down and join."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]  # type: ignore[misc]
    finally:
        server.shutdown()
        thread.join(5)


MLXJAN_HEALTH = json.dumps({"status": "ok", "name": "mlxjan"}).encode()


def test_unused_port_is_free() -> None:
    assert port_state("127.0.0.1", free_port()) == "free"


def test_listener_that_hangs_up_is_other() -> None:
    with tcp_listener(lambda h: None) as port:  # accepts, then closes at once
        assert port_state("127.0.0.1", port) == "other"


def test_listener_that_speaks_another_protocol_is_other() -> None:
    def redis_like(h: socketserver.BaseRequestHandler) -> None:
        h.request.recv(4096)
        h.request.sendall(b"-ERR unknown command 'GET'\r\n")

    with tcp_listener(redis_like) as port:
        assert port_state("127.0.0.1", port) == "other"


@pytest.mark.parametrize("body", [
    json.dumps({"status": "ok"}).encode(),
    json.dumps({"status": "ok", "name": "something-else"}).encode(),
    json.dumps(["mlxjan"]).encode(),
    b"<html>not json</html>",
])
def test_other_http_server_is_other(body: bytes) -> None:
    with http_health(body) as port:
        assert port_state("127.0.0.1", port) == "other"


def test_http_error_status_is_other() -> None:
    with http_health(MLXJAN_HEALTH, status=404) as port:
        assert port_state("127.0.0.1", port) == "other"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
def test_healthy_mlxjan_is_recognised(host: str) -> None:
    with http_health(MLXJAN_HEALTH) as port:
        assert port_state(host, port) == "mlxjan"


def test_probe_ignores_http_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the user's shell must not receive the loopback probe.
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with http_health(MLXJAN_HEALTH) as port:
        assert port_state("127.0.0.1", port) == "mlxjan"


def _no_model_fetch(*args: object) -> None:
    raise AssertionError("serve() went on to fetch the model")


def test_serve_exits_0_when_mlxjan_already_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "port_state", lambda host, port: "mlxjan")
    monkeypatch.setattr(runner, "ensure_model", _no_model_fetch)
    assert serve(Settings()) == 0


def test_serve_refuses_a_port_held_by_another_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "port_state", lambda host, port: "other")
    monkeypatch.setattr(runner, "ensure_model", _no_model_fetch)
    with pytest.raises(PortInUseError, match="in use by another program"):
        serve(Settings(port=4321))


class FakeClock:
    """time.monotonic for runner, moved on only by the sleeps it records."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_waiting_for_a_held_port_backs_off_and_says_so_rarely(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    states = iter(["other"] * 80 + ["free"])
    clock = FakeClock()
    bound: list[tuple[str, int]] = []
    monkeypatch.setattr(runner, "port_state", lambda host, port: next(states))
    monkeypatch.setattr(runner, "bind_sockets",
                        lambda host, port: bound.append((host, port)) or [])
    monkeypatch.setattr(runner, "time", clock)
    with caplog.at_level(logging.INFO, logger="mlxjan"):
        assert runner.claim_port(Settings(port=4321, wait_for_port=True), clock.sleep) == []
    assert bound == [("127.0.0.1", 4321)]
    assert clock.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert set(clock.sleeps[4:]) == {5.0} and len(clock.sleeps) == 80
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("port 4321 on 127.0.0.1 is in use by another program (`lsof -nP "
                           "-iTCP:4321 -sTCP:LISTEN` shows which); stop it, or choose another "
                           "port with --port or MLXJAN_PORT; waiting for it to be free")
    # 387.5 s of waiting: said at once, again after 5 minutes, then that it is free.
    assert len(messages) == 3
    assert messages[1].startswith("port 4321 on 127.0.0.1 is still in use by another program")
    assert messages[2] == "port 4321 on 127.0.0.1 is free now, after 388 s; starting"


def test_a_healthy_mlxjan_appearing_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    states = iter(["other", "other", "mlxjan"])
    monkeypatch.setattr(runner, "port_state", lambda host, port: next(states))
    sleeps: list[float] = []
    assert runner.claim_port(Settings(wait_for_port=True), sleeps.append) is None
    assert sleeps == [0.5, 1.0]


def test_a_port_bound_but_not_listening_counts_as_held() -> None:
    # Nothing answers a connect (so the probe says "free"), but the bind itself fails.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        assert port_state("127.0.0.1", port) == "free"
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is in use"):
            runner.claim_port(Settings(port=port))


def test_claim_port_binds_the_port_before_anything_else() -> None:
    port = free_port()
    sockets = runner.claim_port(Settings(port=port))
    assert sockets is not None
    try:
        assert [s.getsockname()[:2] for s in sockets] == [("127.0.0.1", port)]
        with socket.socket() as late, pytest.raises(OSError):
            late.bind(("127.0.0.1", port))  # ours until uvicorn listens on it
    finally:
        for sock in sockets:
            sock.close()


def test_cli_exits_3_for_a_held_port(monkeypatch: pytest.MonkeyPatch, restore_logging: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(runner, "port_state", lambda host, port: "other")
    monkeypatch.setattr(runner, "ensure_model", _no_model_fetch)
    assert main(["serve", "--port", "4321"]) == runner.EXIT_PORT_IN_USE == 3
    assert "port 4321 on 127.0.0.1 is in use by another program" in capsys.readouterr().err


def test_serve_checks_the_bind_before_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "port_state", lambda host, port: "mlxjan")
    with pytest.raises(InsecureBindError):
        serve(Settings(host="0.0.0.0"))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "", "example.com"])
def test_network_bind_without_key_is_refused(host: str) -> None:
    with pytest.raises(InsecureBindError, match="without an API key"):
        check_bind(Settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5"])
def test_network_bind_with_key_is_allowed(host: str) -> None:
    check_bind(Settings(host=host, api_key="s3cret"))


def test_network_bind_with_empty_key_is_refused() -> None:
    # SecurityMiddleware enforces no empty key, so the bind check must not count it as one.
    with pytest.raises(InsecureBindError):
        check_bind(Settings(host="0.0.0.0", api_key=""))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "LocalHost",
                                  "127.0.0.2"])
def test_loopback_bind_needs_no_key(host: str) -> None:
    check_bind(Settings(host=host))


@pytest.mark.usefixtures("restore_logging")
def test_cli_serve_refuses_network_bind_without_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without an API key" in err
    assert not (tmp_path / "models").exists()  # refused before fetching anything


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_writes_to_a_rotating_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "nested" / "server.log"
    configure_logging(Settings(log_file=log_file, log_level="debug"))
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert len(files) == 1
    assert Path(files[0].baseFilename) == log_file
    assert files[0].maxBytes > 0 and files[0].backupCount > 0
    assert root.level == logging.DEBUG
    logging.getLogger("mlxjan.test").info("hello from the test")
    files[0].flush()
    text = log_file.read_text(encoding="utf-8")
    assert "INFO mlxjan.test: hello from the test" in text


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_without_file_adds_no_file_handler() -> None:
    configure_logging(Settings())
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger().handlers)


def test_ps_shows_the_running_servers_models_and_requests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlxjan.engine.base import Engine
    from mlxjan.runner import ps
    from mlxjan.server.app import create_app
    from mlxjan.testing.fake_engine import FakeEngine
    from mlxjan.testing.server import running

    engines: dict[str, Engine] = {"fake-model": FakeEngine("fake-model")}
    with running(create_app(Settings(data_dir=tmp_path, api_key="k"), engines)) as url:
        port = int(url.rsplit(":", 1)[1])
        assert ps(Settings(data_dir=tmp_path, port=port, api_key="k")) == 0
        out = capsys.readouterr().out
        assert "0 running or waiting (limit 32)" in out and "fake-model" in out
        assert ps(Settings(data_dir=tmp_path, port=port, api_key="wrong")) == 1
    assert ps(Settings(data_dir=tmp_path, port=port)) == 1
    assert "no mlxjan answering" in capsys.readouterr().out


def test_ps_cache_line_shows_memory_and_disk() -> None:
    from mlxjan.runner import _cache_line

    assert _cache_line({}) == "-"
    line = _cache_line({"entries": 2, "bytes": 3 * 2**20, "hits": 5, "misses": 1,
                        "disk_entries": 4, "disk_bytes": 8 * 2**20, "disk_hits": 2})
    assert line == "2 entries, 3 MiB, 5 hits / 1 misses; disk 4 entries, 8 MiB, 2 hits"
