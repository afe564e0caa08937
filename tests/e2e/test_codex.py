"""Codex CLI (pinned, from npm) headless (`codex exec`) against the real server and the
default model, through a custom provider on the Responses API (`wire_api = "responses"`).

Codex's first prompt is ~6k tokens (its instructions and nine tools, a web_search among
them), so the first turn takes a couple of minutes on a CPU; later turns reuse the cache.

Not here (yet): Codex making a file through its shell tool. The 0.5B model runs the command
on most prompts, but on some (the prompt holds the date and the working folder) it repeats
its call after the result, and its answer in words then runs to the end of the context:
more than 20 minutes on this CPU. See issue 16's note.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess, npm_binary, serve_process

pytestmark = pytest.mark.e2e
CODEX = "@openai/codex@0.169.0"


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    """The pinned Codex, installed once."""
    return npm_binary(CODEX, "codex")


@pytest.fixture(scope="module")
def greedy_server(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ServerProcess]:
    # Codex sends no temperature; agents on small models want it cool, and
    # `default_temperature` is the documented setting for that (as for Claude Code).
    with serve_process(tmp_path_factory.mktemp("codex-serve"),
                       env={"MLXJAN_DEFAULT_TEMPERATURE": "0"}) as server:
        yield server


def _codex(binary: Path, server: ServerProcess, home: Path, work: Path, prompt: str
           ) -> list[dict[str, Any]]:
    """`codex exec --json`: its events, one JSON object a line."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(
        'model = "qwen2.5-coder-0.5b-instruct"\n'
        'model_provider = "mlxjan"\n'
        "[model_providers.mlxjan]\n"
        'name = "mlxjan"\n'
        f'base_url = "{server.url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "MLXJAN_API_KEY"\n')
    work.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(codex_home),
           "MLXJAN_API_KEY": "local"}
    proc = subprocess.run(
        [str(binary), "exec", "--json", "--skip-git-repo-check",
         # The test's own folder is the sandbox: Codex's needs bubblewrap and user namespaces.
         "--dangerously-bypass-approvals-and-sandbox", prompt],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _turn_completed(events: list[dict[str, Any]]) -> dict[str, Any]:
    done = [e for e in events if e.get("type") == "turn.completed"]
    assert done and not [e for e in events if e.get("type") == "turn.failed"], events
    usage: dict[str, Any] = done[-1]["usage"]
    return usage


def test_codex_completes_a_turn(codex_bin: Path, greedy_server: ServerProcess,
                                tmp_path: Path) -> None:
    events = _codex(codex_bin, greedy_server, tmp_path / "home", tmp_path / "work",
                    "Reply with just the word hello.")
    usage = _turn_completed(events)
    messages = [e["item"]["text"] for e in events if e.get("type") == "item.completed"
                and e["item"].get("type") == "agent_message"]
    assert messages and messages[-1].strip(), events
    # Codex's whole prompt went through the local model (its usage is ours).
    assert usage["input_tokens"] > 3000
