"""Claude Code (pinned, from npm) headless against the real server and the default model.

Its first prompt is ~12k tokens, so on a CPU-only machine this takes a few minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import npm_binary, serve_process

pytestmark = pytest.mark.e2e
CLAUDE_CODE = "@anthropic-ai/claude-code@2.1.328"


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned Claude Code, installed once."""
    return npm_binary(CLAUDE_CODE, "claude")


def _claude_env(home: Path, server_url: str) -> dict[str, str]:
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": server_url,
        "ANTHROPIC_AUTH_TOKEN": "local",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "API_TIMEOUT_MS": "1200000",
    }


def test_claude_code_answers_from_the_local_model(claude_bin: Path, server_url: str,
                                                  tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [str(claude_bin), "-p", "Reply with just the word hello.", "--output-format", "json"],
        cwd=work, env=_claude_env(tmp_path / "home", server_url), capture_output=True,
        text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads(proc.stdout)
    assert result["is_error"] is False, result
    assert result["subtype"] == "success"
    assert result["result"].strip(), result
    # Claude Code's whole system prompt and tools went through the local model.
    assert result["usage"]["input_tokens"] + result["usage"]["cache_read_input_tokens"] > 5000


def test_claude_code_creates_a_file_through_a_tool_call(claude_bin: Path,
                                                         default_model_path: Path,
                                                         tmp_path: Path) -> None:
    # Claude Code sends no temperature; at the default 0.8 this small model sometimes
    # answers in prose instead of calling Write. Agents on small models want it cool, and
    # `default_temperature` is the documented setting for that.
    work = tmp_path / "work"
    work.mkdir()
    with serve_process(tmp_path, env={"MLXJAN_DEFAULT_TEMPERATURE": "0"}) as server:
        proc = subprocess.run(
            [str(claude_bin), "-p", "Create a file named hello.txt containing hi",
             "--allowedTools", "Write", "--max-turns", "2", "--output-format", "json"],
            cwd=work, env=_claude_env(tmp_path / "home", server.url), capture_output=True,
            text=True, timeout=1500, check=False)
    created = work / "hello.txt"
    # The small model may go on calling tools after the write; the turn cap ends that.
    assert created.exists(), proc.stdout + proc.stderr
    assert created.read_text().strip() == "hi"


def test_claude_code_turn_under_a_thinking_template(claude_bin: Path, thinking_model: str,
                                                   tmp_path: Path) -> None:
    """Claude Code sends `thinking: {type: adaptive, display: omitted}`; under a thinking
    template the model reasons (closed by the server's budget), the reasoning comes back as
    signed thinking blocks, and the reply holds none of it.

    The file task of the test above is not asked here: under this template the 0.5B model
    does not call Write (it echoes the prompt after its reasoning), see issue 15's note."""
    work = tmp_path / "work"
    work.mkdir()
    env = {"MLXJAN_DEFAULT_TEMPERATURE": "0", "MLXJAN_DEFAULT_MODEL": thinking_model,
           "MLXJAN_REASONING_BUDGET": "24"}
    home = tmp_path / "home"
    with serve_process(tmp_path, env=env) as server:
        proc = subprocess.run(
            [str(claude_bin), "-p", "Reply with just the word hello.", "--output-format",
             "json"],
            cwd=work, env=_claude_env(home, server.url), capture_output=True,
            text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads(proc.stdout)
    assert result["is_error"] is False and result["subtype"] == "success", result
    assert result["result"].strip() and "think>" not in result["result"], result
    blocks = [block for line in _transcript_lines(home)
              if isinstance((message := line.get("message")), dict)
              and message.get("role") == "assistant"
              for block in message.get("content") or [] if isinstance(block, dict)]
    thinking = [b for b in blocks if b.get("type") == "thinking"]
    assert thinking and all(b.get("signature") for b in thinking), blocks
    for block in blocks:
        if block.get("type") in ("text", "tool_use"):
            assert "think>" not in json.dumps(block), block


def _transcript_lines(home: Path) -> list[dict[str, object]]:
    """What Claude Code recorded of the session (its JSONL transcripts under ~/.claude)."""
    lines: list[dict[str, object]] = []
    for path in (home / ".claude" / "projects").rglob("*.jsonl"):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines
