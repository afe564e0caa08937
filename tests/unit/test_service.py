"""`mlxjan service ...`: the launchd plist, the systemd unit, and the calls made to
`launchctl` / `systemctl` (stand-in scripts on PATH that record their arguments)."""

from __future__ import annotations

import os
import plistlib
import shlex
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mlxjan.cli import _parser, _settings, main
from mlxjan.service import LABEL, ServicePaths, render_plist, render_unit

SECRET = "sk-test-do-not-leak-4242"
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{record}"
code="${{STUB_EXIT:-0}}"
if [ -n "$STUB_STDOUT" ]; then echo "$STUB_STDOUT"; fi
if [ "$code" != 0 ]; then echo "stub $(basename "$0") says no" >&2; fi
exit "$code"
"""


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MLXJAN_* from the shell (but a key the service files must not pick up); HOME in tmp."""
    monkeypatch.setenv("MLXJAN_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("MLXJAN_API_KEY", SECRET)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("STUB_EXIT", raising=False)
    monkeypatch.delenv("STUB_STDOUT", raising=False)
    return home




@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[], list[str]]:
    """Stand-in `launchctl` and `systemctl` first on PATH; returns a reader of their calls
    (one line per call, "<tool> <args>") that also forgets what it has read."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "calls.log"
    record.touch()
    for tool in ("launchctl", "systemctl"):
        script = bin_dir / tool
        script.write_text(STUB.format(record=record))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def read() -> list[str]:
        lines = record.read_text().splitlines()
        record.write_text("")
        return lines

    return read


def _paths(root: Path) -> ServicePaths:
    return ServicePaths(python=root / "venv" / "bin" / "python", home=root / "home",
                        log_dir=root / "home" / "Library" / "Logs" / "mlxjan")


# ---- the launchd plist -------------------------------------------------------------------


def test_plist_parses_and_runs_this_interpreter(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    text = render_plist(paths)
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == LABEL == "com.mlxjan.server"
    assert plist["ProgramArguments"] == [str(paths.python), "-m", "mlxjan", "serve",
                                         "--wait-for-port", "--log-file", str(paths.log_file)]
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    assert paths.log_file.parent == paths.log_dir
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False, "Crashed": True}
    assert type(plist["ThrottleInterval"]) is int and plist["ThrottleInterval"] > 0
    assert type(plist["ExitTimeOut"]) is int and plist["ExitTimeOut"] > 0
    assert plist["ProcessType"] == "Interactive"
    assert plist["WorkingDirectory"] == str(paths.home)
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).parent == paths.log_dir
    assert plist["StandardOutPath"] != plist["StandardErrorPath"]


def test_plist_holds_no_secret(tmp_path: Path) -> None:
    text = render_plist(_paths(tmp_path))
    plist = plistlib.loads(text.encode())
    env = plist["EnvironmentVariables"]
    assert env["HOME"] == str(tmp_path / "home")
    for name in env:
        assert "KEY" not in name.upper() and "TOKEN" not in name.upper()
    assert SECRET not in text  # MLXJAN_API_KEY is set in this test's environment
    assert "--api-key" not in plist["ProgramArguments"]
    assert "$" not in text  # every template field was filled


def test_plist_escapes_xml_special_characters(tmp_path: Path) -> None:
    odd = tmp_path / "R&D <team> 'x' \"y\" $HOME"
    paths = ServicePaths(python=odd / "bin" / "python", home=odd, log_dir=odd / "logs")
    plist = plistlib.loads(render_plist(paths).encode())
    assert plist["ProgramArguments"][0] == str(paths.python)
    assert plist["ProgramArguments"][-1] == str(odd / "logs" / "server.log")
    assert plist["WorkingDirectory"] == str(odd)
    assert plist["EnvironmentVariables"]["HOME"] == str(odd)
    assert plist["StandardErrorPath"].startswith(str(odd / "logs"))


def test_launchd_paths_follow_home(isolated: Path) -> None:
    paths = ServicePaths.for_platform("launchd")
    assert paths.home == isolated
    assert paths.log_dir == isolated / "Library" / "Logs" / "mlxjan"
    assert paths.log_file == paths.log_dir / "server.log"
    assert paths.python == Path(sys.executable).absolute()


def test_systemd_paths_follow_home(isolated: Path) -> None:
    paths = ServicePaths.for_platform("systemd")
    assert paths.home == isolated
    assert paths.log_dir == isolated / ".local" / "state" / "mlxjan" / "logs"


def test_services_wait_for_a_port_held_by_another_program(tmp_path: Path) -> None:
    """A held port must not become a restart every ThrottleInterval/RestartSec: both
    definitions run `serve` with a flag that the CLI really reads as wait_for_port."""
    paths = _paths(tmp_path)
    [exec_start] = _unit_values(render_unit(paths), "ExecStart")
    for argv in (plistlib.loads(render_plist(paths).encode())["ProgramArguments"],
                 shlex.split(exec_start)):
        assert argv[1:4] == ["-m", "mlxjan", "serve"]
        args = _parser().parse_args(argv[3:])
        assert _settings(args).wait_for_port is True
    assert _settings(_parser().parse_args(["serve"])).wait_for_port is False


# ---- the systemd unit --------------------------------------------------------------------


def _unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_unit_runs_this_interpreter(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    text = render_unit(paths)
    [exec_start] = _unit_values(text, "ExecStart")
    assert shlex.split(exec_start) == [str(paths.python), "-m", "mlxjan", "serve",
                                       "--wait-for-port", "--log-file", str(paths.log_file)]
    assert _unit_values(text, "Restart") == ["on-failure"]
    assert _unit_values(text, "WorkingDirectory") == [str(paths.home)]
    assert _unit_values(text, "WantedBy") == ["default.target"]
    assert SECRET not in text and "api-key" not in text


def test_unit_quotes_paths_with_spaces_and_escapes_specifiers(tmp_path: Path) -> None:
    odd = tmp_path / "My Projects" / "100%"
    paths = ServicePaths(python=odd / "python", home=odd, log_dir=odd / "logs")
    text = render_unit(paths)
    [exec_start] = _unit_values(text, "ExecStart")
    # systemd: a quoted word is one argument; "%%" is a literal "%".
    words = [w.replace("%%", "%") for w in shlex.split(exec_start)]
    assert words == [str(paths.python), "-m", "mlxjan", "serve", "--wait-for-port",
                     "--log-file", str(paths.log_file)]
    assert _unit_values(text, "WorkingDirectory") == [str(odd).replace("%", "%%")]


# ---- launchctl ---------------------------------------------------------------------------


def _launchd(action: str) -> int:
    return main(["service", action, "--manager", "launchd"])


def test_launchd_lifecycle(isolated: Path, calls: Callable[[], list[str]],
                           monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    domain = f"gui/{os.getuid()}"
    target = f"{domain}/{LABEL}"
    plist_path = isolated / "Library" / "LaunchAgents" / "com.mlxjan.server.plist"

    assert _launchd("install") == 0
    assert calls() == [f"launchctl bootout {target}",
                       f"launchctl bootstrap {domain} {plist_path}"]
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"][0] == str(Path(sys.executable).absolute())
    assert (isolated / "Library" / "Logs" / "mlxjan").is_dir()
    assert SECRET not in plist_path.read_text()
    assert str(plist_path) in capsys.readouterr().out

    assert _launchd("start") == 0
    assert calls() == [f"launchctl bootstrap {domain} {plist_path}",
                       f"launchctl kickstart {target}"]
    assert _launchd("stop") == 0
    assert calls() == [f"launchctl bootout {target}"]
    assert _launchd("restart") == 0  # works after stop too: loads the job again first
    assert calls() == [f"launchctl bootstrap {domain} {plist_path}",
                       f"launchctl kickstart -k {target}"]

    capsys.readouterr()
    monkeypatch.setenv("STUB_STDOUT", "state = running")
    assert _launchd("status") == 0
    assert calls() == [f"launchctl print {target}"]
    assert "state = running" in capsys.readouterr().out

    assert _launchd("uninstall") == 0
    assert calls() == [f"launchctl bootout {target}"]
    assert not plist_path.exists()


def test_launchd_install_is_repeatable(isolated: Path, calls: Callable[[], list[str]]) -> None:
    assert _launchd("install") == 0
    assert _launchd("install") == 0
    plist_path = isolated / "Library" / "LaunchAgents" / "com.mlxjan.server.plist"
    assert [c.split()[1] for c in calls()] == ["bootout", "bootstrap"] * 2
    assert plistlib.loads(plist_path.read_bytes())["Label"] == LABEL
    assert [p.name for p in plist_path.parent.iterdir()] == [plist_path.name]  # no .tmp left


@pytest.mark.parametrize("action", ["start", "stop", "restart", "status", "logs"])
def test_launchd_before_install_is_a_clear_error(
        action: str, calls: Callable[[], list[str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _launchd(action) == 1
    assert "not installed" in capsys.readouterr().err
    assert calls() == []


def test_failing_launchctl_is_reported(isolated: Path, calls: Callable[[], list[str]],
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert _launchd("install") == 0
    calls()
    capsys.readouterr()
    monkeypatch.setenv("STUB_EXIT", "1")
    assert _launchd("status") == 1
    err = capsys.readouterr().err
    assert "launchctl print" in err and "failed (1)" in err
    assert "stub launchctl says no" in err


def test_failing_bootstrap_fails_install(isolated: Path, calls: Callable[[], list[str]],
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STUB_EXIT", "1")
    assert _launchd("install") == 1
    assert "launchctl bootout" in capsys.readouterr().err
    assert len(calls()) == 1  # stopped at the first failure


def test_missing_tool_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert _launchd("install") == 1
    assert "`launchctl` was not found on PATH" in capsys.readouterr().err


def test_launchd_logs(isolated: Path, calls: Callable[[], list[str]],
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert _launchd("install") == 0
    capsys.readouterr()
    log_file = isolated / "Library" / "Logs" / "mlxjan" / "server.log"
    assert _launchd("logs") == 0
    assert f"no log yet at {log_file}" in capsys.readouterr().out
    log_file.write_text("".join(f"line {n}\n" for n in range(200)))
    assert _launchd("logs") == 0
    out = capsys.readouterr().out
    assert "line 199" in out and "line 150" in out and "line 149" not in out
    assert all(c.split()[1] in ("bootout", "bootstrap") for c in calls())  # logs calls nothing


# ---- systemctl ---------------------------------------------------------------------------


def _systemd(action: str) -> int:
    return main(["service", action, "--manager", "systemd"])


def test_systemd_lifecycle(isolated: Path, calls: Callable[[], list[str]],
                           monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    unit = isolated / ".config" / "systemd" / "user" / "mlxjan.service"

    assert _systemd("install") == 0
    assert calls() == ["systemctl --user daemon-reload",
                       "systemctl --user enable --now mlxjan.service"]
    text = unit.read_text()
    [exec_start] = _unit_values(text, "ExecStart")
    log_file = isolated / ".local" / "state" / "mlxjan" / "logs" / "server.log"
    assert shlex.split(exec_start) == [str(Path(sys.executable).absolute()), "-m", "mlxjan",
                                       "serve", "--wait-for-port", "--log-file", str(log_file)]
    assert log_file.parent.is_dir()
    assert SECRET not in text

    for verb in ("start", "stop", "restart"):
        assert _systemd(verb) == 0
        assert calls() == [f"systemctl --user {verb} mlxjan.service"]

    capsys.readouterr()
    monkeypatch.setenv("STUB_EXIT", "3")  # a stopped unit: still an answer
    monkeypatch.setenv("STUB_STDOUT", "Active: inactive (dead)")
    assert _systemd("status") == 0
    assert calls() == ["systemctl --user status --no-pager mlxjan.service"]
    assert "inactive (dead)" in capsys.readouterr().out
    monkeypatch.delenv("STUB_EXIT")

    assert _systemd("logs") == 0
    assert "no log yet" in capsys.readouterr().out
    log_file.write_text("started\nserving on http://127.0.0.1:1337/v1\n")
    assert _systemd("logs") == 0
    assert "serving on http://127.0.0.1:1337/v1" in capsys.readouterr().out
    assert calls() == []

    assert _systemd("uninstall") == 0
    assert calls() == ["systemctl --user disable --now mlxjan.service",
                       "systemctl --user daemon-reload"]
    assert not unit.exists()


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "status"])
def test_failing_systemctl_is_reported(verb: str, isolated: Path,
                                       calls: Callable[[], list[str]],
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert _systemd("install") == 0
    calls()
    capsys.readouterr()
    monkeypatch.setenv("STUB_EXIT", "1")
    assert _systemd(verb) == 1
    err = capsys.readouterr().err
    assert f"`systemctl --user {verb}" in err and "failed (1)" in err
    assert "stub systemctl says no" in err


def test_failing_enable_fails_install(calls: Callable[[], list[str]],
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STUB_EXIT", "1")
    assert _systemd("install") == 1
    assert "systemctl --user daemon-reload" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["start", "stop", "restart", "status", "logs"])
def test_systemd_before_install_is_a_clear_error(
        action: str, calls: Callable[[], list[str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _systemd(action) == 1
    assert "not installed: run `mlxjan service install`" in capsys.readouterr().err
    assert calls() == []


def test_uninstall_when_not_installed_is_fine(isolated: Path,
                                              calls: Callable[[], list[str]]) -> None:
    assert _systemd("uninstall") == 0
    assert _launchd("uninstall") == 0
    assert len(calls()) == 3


@pytest.fixture(autouse=True)
def _restore_logging(restore_logging: None) -> None:
    """Every test here may reconfigure logging through the CLI."""
