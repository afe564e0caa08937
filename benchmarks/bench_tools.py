"""How often a tool request yields a valid call: mlxjan against peers, same model, one run.

20 varied prompts, each answerable by one of 8 declared tools, sent greedy through the
OpenAI API with `tool_choice` "auto" and "required". A call is valid when it names a declared
tool and its arguments parse and validate against that tool's JSON Schema; "right tool" also
needs the tool the prompt asks for. Servers: mlxjan (tool grammar on, and off), llama-cpp-
python's server with its `chatml-function-calling` format, and optionally llama.cpp's own
`llama-server --jinja` (built from the llama-cpp-python sdist; pass --llama-server PATH).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_tools.py [--llama-server /path/to/llama-server]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlxjan.engine.cpu import cpu_info
from mlxjan.engine.llamacpp.kernels import KernelCheck, KernelPlan
from mlxjan.models.store import ModelStore
from mlxjan.settings import DEFAULT_MODEL, Settings
from mlxjan.testing.server import free_port, wait_until_up


def _tool(name: str, description: str, **props: str) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "required": list(props),
                       "properties": {k: {"type": v} for k, v in props.items()}}}}


TOOLS = [
    _tool("get_weather", "Current weather for a city", city="string"),
    _tool("search_web", "Search the web", query="string"),
    _tool("calculate", "Evaluate an arithmetic expression", expression="string"),
    _tool("send_email", "Send an email", to="string", subject="string", body="string"),
    _tool("create_file", "Create a file with content", path="string", content="string"),
    _tool("get_time", "Current time in a timezone", timezone="string"),
    _tool("translate", "Translate text", text="string", target_language="string"),
    _tool("set_reminder", "Set a reminder", time="string", message="string"),
]
PROMPTS = [
    ("What is the weather in Paris?", "get_weather"),
    ("Is it raining in Tokyo right now?", "get_weather"),
    ("How warm is it in Cairo today?", "get_weather"),
    ("Search the web for the latest Python release.", "search_web"),
    ("Find news about the Mars rover.", "search_web"),
    ("Look up who wrote Don Quixote.", "search_web"),
    ("What is 1234 * 5678?", "calculate"),
    ("Compute the square root of 144 plus 10.", "calculate"),
    ("Calculate 15% of 240.", "calculate"),
    ("Email bob@example.com with subject Lunch saying see you at noon.", "send_email"),
    ("Send an email to alice@example.com: the report is ready, subject Report.",
     "send_email"),
    ("Create a file named notes.txt containing hello world.", "create_file"),
    ("Write a file todo.md with the text buy milk.", "create_file"),
    ("What time is it in New York?", "get_time"),
    ("Tell me the current time in UTC.", "get_time"),
    ("Translate 'good morning' into Spanish.", "translate"),
    ("How do you say thank you in Japanese? Translate it.", "translate"),
    ("Remind me at 6pm to call mom.", "set_reminder"),
    ("Set a reminder for tomorrow 9am: dentist appointment.", "set_reminder"),
    ("Please remind me in one hour to stretch.", "set_reminder"),
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def judge(message: dict[str, Any], expected: str) -> tuple[bool, bool]:
    calls = message.get("tool_calls") or []
    if not calls:
        return False, False
    valid = True
    for call in calls:
        name = call["function"]["name"]
        try:
            args = json.loads(call["function"]["arguments"])
            jsonschema.validate(args, SCHEMAS[name])
        except (KeyError, ValueError, jsonschema.ValidationError):
            valid = False
    return valid, valid and calls[0]["function"]["name"] == expected


@contextmanager
def server(cmd: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, path="/v1/models", timeout=180)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def score(url: str, model: str, choice: str) -> tuple[int, int]:
    valid = right = 0
    with httpx.Client(timeout=600) as http:
        for prompt, expected in PROMPTS:
            body = {"model": model, "temperature": 0.0, "max_tokens": 200, "tools": TOOLS,
                    "tool_choice": choice, "messages": [{"role": "user", "content": prompt}]}
            reply = http.post(f"{url}/v1/chat/completions", json=body)
            if reply.status_code != 200:
                continue
            ok, hit = judge(reply.json()["choices"][0]["message"], expected)
            valid, right = valid + ok, right + hit
    return valid, right


def peer_args() -> tuple[argparse.Namespace, str]:
    """Command-line options shared by the peer benchmarks, and the default model's GGUF."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-server", type=Path, help="a llama-server binary to compare")
    parser.add_argument("--threads", type=int,
                        help="for every server (default: mlxjan picks its own; the peers get "
                             "one per physical core, as llama.cpp's default)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the workload per server (bench_parallel)")
    parser.add_argument("--no-peers", action="store_true",
                        help="only mlxjan builds: this checkout and each --mlxjan-at")
    parser.add_argument("--mlxjan-at", type=Path, action="append", default=[],
                        help="also run mlxjan as this checkout has it (a git worktree of "
                             "another commit); repeatable")
    args = parser.parse_args()
    store = ModelStore(Settings().data_dir)
    manifest = store.get(DEFAULT_MODEL)
    if manifest is None:
        raise SystemExit(f"run `mlxjan pull {DEFAULT_MODEL}` first")
    return args, str(store.weights_path(manifest))


def peer_threads(args: argparse.Namespace) -> str:
    return str(args.threads or cpu_info().physical_cores)


def mlxjan_threads(args: argparse.Namespace) -> list[str]:
    """mlxjan as shipped unless --threads was given."""
    return ["--threads", str(args.threads)] if args.threads else []


def kernel_plan(gguf: str) -> KernelPlan:
    """The kernel plan mlxjan's self-check chose for this model on this CPU: peers load
    under it too (llama-cpp-python's server through llama_cpp_peer.py, llama-server with
    --no-repack), so none runs a path known wrong here."""
    settings = Settings()
    manifest = ModelStore(settings.data_dir).get(DEFAULT_MODEL)
    key = manifest.sha256 if manifest else gguf
    return KernelCheck(settings.self_checks_dir).verdict(Path(gguf), key).require()


def llama_cpp_server(gguf: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.llama_cpp_peer",
            "--repack", str(int(kernel_plan(gguf).repack)), "--model", gguf, *flags]


def llama_server(binary: Path, gguf: str, *flags: str) -> list[str]:
    repack = [] if kernel_plan(gguf).repack else ["--no-repack"]
    return [str(binary), "-m", gguf, *repack, *flags]


def cache_peers(args: argparse.Namespace, gguf: str, *llama_cpp_flags: str
                ) -> list[tuple[str, list[str]]]:
    """mlxjan and its peers at an 8k context (llama-server: 4 slots sharing 32k), by name."""
    threads = peer_threads(args)
    serve = ["serve", *mlxjan_threads(args), "--context-length", "8192", "--log-level",
             "warning"]
    peers = [
        ("mlxjan", [sys.executable, "-m", "mlxjan", *serve]),
        *((f"mlxjan @ {checkout.name}", [sys.executable, "-m", "benchmarks.at_checkout",
                                          str(checkout), *serve])
          for checkout in args.mlxjan_at),
    ]
    if args.no_peers:
        return peers
    peers += [
        ("llama_cpp.server", llama_cpp_server(gguf, "--n_ctx", "8192", "--n_threads", threads,
                                              "--model_alias", DEFAULT_MODEL,
                                              *llama_cpp_flags)),
    ]
    if args.llama_server:
        peers.append(("llama-server -np 4", llama_server(
            args.llama_server, gguf, "-np", "4", "-c", "32768", "-t", threads, "--jinja")))
    return peers


def main() -> int:
    args, gguf = peer_args()
    threads = peer_threads(args)
    mlxjan = [sys.executable, "-m", "mlxjan", "serve", *mlxjan_threads(args),
              "--context-length", "4096", "--log-level", "warning"]
    peers: list[tuple[str, list[str], dict[str, str]]] = [
        ("mlxjan (tool grammar on)", mlxjan, {}),
        ("mlxjan (tool grammar off)", mlxjan, {"MLXJAN_TOOL_GRAMMAR": "false"}),
        ("llama_cpp.server chatml-function-calling",
         llama_cpp_server(gguf, "--n_ctx", "4096", "--n_threads", threads, "--chat_format",
                          "chatml-function-calling", "--model_alias", DEFAULT_MODEL), {}),
    ]
    if args.llama_server:
        peers.append(("llama-server --jinja", llama_server(
            args.llama_server, gguf, "--jinja", "-c", "4096", "-t", threads, "--alias",
            DEFAULT_MODEL), {}))
    n = len(PROMPTS)
    print(f"{'server':42} {'auto valid':>10} {'auto right':>10} {'req valid':>10} "
          f"{'req right':>10}   (of {n})")
    for name, cmd, env in peers:
        with server(cmd, env) as url:
            auto, required = score(url, DEFAULT_MODEL, "auto"), \
                score(url, DEFAULT_MODEL, "required")
        print(f"{name:42} {auto[0]:>10} {auto[1]:>10} {required[0]:>10} {required[1]:>10}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
