"""`mlxjan service ...`: run the server at login under launchd (macOS) or systemd (Linux).

Both render a definition with absolute paths (this interpreter, the log file) and drive the
platform's own tool: `launchctl bootstrap/bootout/kickstart/print` in `gui/$UID`, or
`systemctl --user`. The server itself never daemonises.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal, Protocol
from xml.sax.saxutils import escape

from mlxjan.errors import MlxjanError

LABEL = "com.mlxjan.server"
UNIT = "mlxjan.service"
PLIST_TEMPLATE = Path(__file__).resolve().parents[1] / "launchd" / f"{LABEL}.plist"
Action = Literal["install", "uninstall", "start", "stop", "restart", "status", "logs"]

SYSTEMD_UNIT = """\
[Unit]
Description=mlxjan local LLM server
After=network.target

[Service]
ExecStart=$python -m mlxjan serve --wait-for-port --log-file $log_file
WorkingDirectory=$home
Environment=PATH=/usr/bin:/bin
Restart=on-failure
RestartSec=10
TimeoutStopSec=20
KillSignal=SIGTERM

[Install]
WantedBy=default.target
"""


class ServiceError(MlxjanError):
    code = "service_error"


@dataclass(frozen=True)
class ServicePaths:
    python: Path
    home: Path
    log_dir: Path

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    @classmethod
    def for_platform(cls, manager: str) -> ServicePaths:
        home = Path.home()
        log_dir = (home / "Library" / "Logs" / "mlxjan" if manager == "launchd"
                   else home / ".local" / "state" / "mlxjan" / "logs")
        # The venv's interpreter itself, not the resolved base Python: it must see mlxjan.
        return cls(python=Path(sys.executable).absolute(), home=home, log_dir=log_dir)

    def fields(self) -> dict[str, str]:
        return {"label": LABEL, "python": str(self.python), "home": str(self.home),
                "log_dir": str(self.log_dir), "log_file": str(self.log_file)}


def render_plist(paths: ServicePaths) -> str:
    fields = {k: escape(v) for k, v in paths.fields().items()}
    return Template(PLIST_TEMPLATE.read_text(encoding="utf-8")).substitute(fields)


def render_unit(paths: ServicePaths) -> str:
    # `%` starts a specifier everywhere and `$` a variable in arguments (not in the command
    # name); a path with a space must be quoted or it splits into several arguments.
    return Template(SYSTEMD_UNIT).substitute(
        python=_unit_word(str(paths.python).replace("%", "%%")),
        log_file=_unit_word(str(paths.log_file).replace("%", "%%").replace("$", "$$")),
        home=str(paths.home).replace("%", "%%"))  # the rest of the line: no quoting


def _unit_word(word: str) -> str:
    if any(c.isspace() or c in "\"'\\" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


class Manager(Protocol):
    paths: ServicePaths
    definition: Path

    def run(self, action: Action) -> str: ...


def _call(tool: str, *args: str, ok_codes: tuple[int, ...] = (0,)) -> str:
    binary = shutil.which(tool)
    if binary is None:
        raise ServiceError(f"`{tool}` was not found on PATH")
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode not in ok_codes:
        raise ServiceError(f"`{tool} {' '.join(args)}` failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


class Launchd:
    def __init__(self, paths: ServicePaths) -> None:
        self.paths = paths
        self.definition = paths.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        self.domain = f"gui/{os.getuid()}"

    def run(self, action: Action) -> str:
        target = f"{self.domain}/{LABEL}"
        if action == "install":
            self.paths.log_dir.mkdir(parents=True, exist_ok=True)
            _write(self.definition, render_plist(self.paths))
            _call("launchctl", "bootout", target, ok_codes=(0, 3, 5, 36, 113))
            _call("launchctl", "bootstrap", self.domain, str(self.definition))
            return f"installed {self.definition}; it starts now and at every login"
        if action == "uninstall":
            _call("launchctl", "bootout", target, ok_codes=(0, 3, 5, 36, 113))
            self.definition.unlink(missing_ok=True)
            return "uninstalled"
        self._require_installed()
        if action == "start":
            _call("launchctl", "bootstrap", self.domain, str(self.definition),
                  ok_codes=(0, 5, 37))  # already loaded is fine
            _call("launchctl", "kickstart", target)
            return "started"
        if action == "stop":
            _call("launchctl", "bootout", target, ok_codes=(0, 3, 5, 36, 113))
            return "stopped (starts again at next login; `mlxjan service start` now)"
        if action == "restart":
            # After `stop` the job is unloaded: load it again, then kill and restart it.
            _call("launchctl", "bootstrap", self.domain, str(self.definition),
                  ok_codes=(0, 5, 37))
            _call("launchctl", "kickstart", "-k", target)
            return "restarted"
        if action == "status":
            return _call("launchctl", "print", target, ok_codes=(0, 113))
        return _tail(self.paths.log_file)

    def _require_installed(self) -> None:
        if not self.definition.exists():
            raise ServiceError("the service is not installed: run `mlxjan service install`")


class Systemd:
    def __init__(self, paths: ServicePaths) -> None:
        self.paths = paths
        self.definition = paths.home / ".config" / "systemd" / "user" / UNIT

    def run(self, action: Action) -> str:
        if action == "install":
            self.paths.log_dir.mkdir(parents=True, exist_ok=True)
            _write(self.definition, render_unit(self.paths))
            _call("systemctl", "--user", "daemon-reload")
            _call("systemctl", "--user", "enable", "--now", UNIT)
            return f"installed {self.definition}; it starts now and at every login"
        if action == "uninstall":
            _call("systemctl", "--user", "disable", "--now", UNIT, ok_codes=(0, 1, 5))
            self.definition.unlink(missing_ok=True)
            _call("systemctl", "--user", "daemon-reload")
            return "uninstalled"
        if not self.definition.exists():
            raise ServiceError("the service is not installed: run `mlxjan service install`")
        if action in ("start", "stop", "restart"):
            _call("systemctl", "--user", action, UNIT)
            return f"{action} done"
        if action == "status":
            # `status` exits 3 for a stopped unit: still an answer, not a failure.
            return _call("systemctl", "--user", "status", "--no-pager", UNIT, ok_codes=(0, 3))
        return _tail(self.paths.log_file)


def manager_for(kind: Literal["auto", "launchd", "systemd"]) -> Manager:
    if kind == "auto":
        kind = "launchd" if sys.platform == "darwin" else "systemd"
    paths = ServicePaths.for_platform(kind)
    return Launchd(paths) if kind == "launchd" else Systemd(paths)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 50) -> str:
    if not path.exists():
        return f"no log yet at {path}"
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(fh.readlines()[-lines:])
