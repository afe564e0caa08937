"""A port held by another program, against the real `mlxjan serve` process.

Interactive: it exits at once with status 3 and one line naming the port and how to pick
another, before any model is fetched. Under a supervisor (`--wait-for-port`, which the
launchd plist and the systemd unit pass), it says once that it waits, then serves as soon as
the port is free: no exit, so no restart every ThrottleInterval.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mlxjan.models.store import ModelStore, new_manifest
from mlxjan.testing.server import free_port, wait_until_up

pytestmark = pytest.mark.e2e

# Another program on the port: accepts connections and hangs up (it speaks no HTTP), until
# its stdin is closed. SO_REUSEADDR as most servers set it; without it Linux keeps the port
# unbindable for ~60 s after it exits (the TIME_WAIT of the connections it closed), and the
# waiting server starts only then.
HOLDER = """
import socket, sys, threading
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
def hang_up():
    while True:
        sock.accept()[0].close()
threading.Thread(target=hang_up, daemon=True).start()
print("holding", flush=True)
sys.stdin.read()
"""
PLACEHOLDER = "placeholder-model"  # installed, never loaded: serving /health needs no model


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The user's MLXJAN_* and config file left out; the data dir in tmp."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLXJAN_")}
    return {**clean, "MLXJAN_HOME": str(tmp_path / "data"),
            "MLXJAN_CONFIG": str(tmp_path / "absent.toml"), "PYTHONUNBUFFERED": "1"}


@contextmanager
def held(port: int) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(port)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        yield holder
    finally:
        release(holder)


def release(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    if holder.stdout is not None:
        holder.stdout.close()


def test_interactive_serve_exits_3_with_one_clear_line(tmp_path: Path,
                                                       env: dict[str, str]) -> None:
    port = free_port()
    with held(port):
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "mlxjan", "serve", "--port", str(port)],
                              capture_output=True, text=True, timeout=60, env=env)
        took = time.monotonic() - began
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.splitlines()
    assert line == (f"mlxjan: port {port} on 127.0.0.1 is in use by another program (`lsof "
                    f"-nP -iTCP:{port} -sTCP:LISTEN` shows which); stop it, or choose another "
                    "port with --port or MLXJAN_PORT")
    assert took < 30  # at once: no wait, no download
    assert not (tmp_path / "data" / "models").exists()  # refused before any model fetch
    assert not (tmp_path / "data" / "staging").exists()


def test_supervised_serve_waits_for_the_port_then_serves(tmp_path: Path,
                                                         env: dict[str, str]) -> None:
    store = ModelStore(tmp_path / "data")
    with store.staging(PLACEHOLDER) as stage:
        (stage / "model.gguf").write_bytes(b"GGUF")
        store.install(stage, new_manifest(id=PLACEHOLDER, format="gguf", source="test",
                                          file="model.gguf", sha256="0" * 64, size=4))
    port, log = free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with held(port) as holder, open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxjan", "serve", "--port", str(port), "--wait-for-port",
             "--model", PLACEHOLDER], stdout=sink, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            deadline = time.monotonic() + 60
            while "waiting for it to be free" not in log.read_text():
                assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            time.sleep(3)  # several probes (0.5 s, 1 s, 2 s apart): still waiting, said once
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
            text = log.read_text()
            assert text.count(f"port {port} on 127.0.0.1 is in use by another program") == 1
            assert "--port or MLXJAN_PORT; waiting for it to be free" in text
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{url}/health", timeout=2)  # still the holder's port

            release(holder)
            try:
                wait_until_up(url, proc, timeout=60)
            except RuntimeError as exc:
                raise AssertionError(log.read_text()) from exc
            assert httpx.get(f"{url}/health").json()["name"] == "mlxjan"
            assert f"port {port} on 127.0.0.1 is free now" in log.read_text()
            proc.terminate()
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
