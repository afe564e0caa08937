"""Finding tool calls in what a model writes, by model family, whole or while streaming.

Families differ in how a call is marked: Qwen/Hermes wrap JSON in `<tool_call>` tags, Mistral
starts with `[TOOL_CALLS]`, Llama 3.x writes a bare JSON object (optionally after
`<|python_tag|>`). Small models often skip the markers and answer with a fenced or bare JSON
object instead; that is recovered as a call only when it names a declared tool with
arguments that fit its schema. Anything else stays text: no call is ever invented.
Families whose calls are not JSON (Qwen3-Coder XML, GLM, pythonic, Gemma, Kimi, ...) are
read by mlx-lm's parsers, then checked here the same way.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlxjan.chat.mlx_parsers import run_parser
from mlxjan.chat.tool_formats import HERMES as HERMES
from mlxjan.chat.tool_formats import JSON_ONLY as JSON_ONLY
from mlxjan.chat.tool_formats import LLAMA3 as LLAMA3
from mlxjan.chat.tool_formats import MISTRAL as MISTRAL
from mlxjan.chat.tool_formats import ToolFormat as ToolFormat
from mlxjan.chat.tool_formats import detect_format as detect_format
from mlxjan.types import ToolSpec

JsonSchema = Mapping[str, Any]


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # compact JSON text of an object


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def declared_tools(tools: Sequence[ToolSpec]) -> dict[str, JsonSchema]:
    """Tool name -> parameters schema."""
    return {tool.name: tool.parameters for tool in tools}


def parse_calls(body: str, declared: Mapping[str, JsonSchema]) -> list[ParsedCall] | None:
    """Every call in `body` (JSON objects, a list of them, or Mistral's `name[ARGS]{...}`),
    or None unless all of it is valid calls to declared tools."""
    objects = _json_values(body.strip()) or _mistral_headers(body)
    if not objects:
        return None
    flat: list[Any] = []
    for value in objects:
        flat.extend(value if isinstance(value, list) else [value])
    calls = [_call_from(obj, declared) for obj in flat]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def parse_body(body: str, fmt: ToolFormat,
               declared: Mapping[str, JsonSchema]) -> list[ParsedCall] | None:
    """Every call in the text between a family's markers, or None unless all of it is valid
    calls to declared tools."""
    if fmt.parser is None:
        return parse_calls(body, declared)
    found = run_parser(fmt.parser, body, declared)
    if not found:
        return None
    calls = [_call_from(obj, declared) for obj in found]
    if any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


_FENCE = re.compile(r"^```[ \t]*(json|JSON)?[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


def recover_calls(text: str, declared: Mapping[str, JsonSchema]) -> list[ParsedCall] | None:
    """Calls written as a fenced or bare JSON answer, instead of the family's markers."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(2)
    if not stripped.startswith(("{", "[")):
        return None
    return parse_calls(stripped, declared)


def _json_values(text: str) -> list[Any]:
    """Consecutive JSON values in text (whitespace or commas between), or [] if not only."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    while pos < len(text):
        if text[pos] in " \t\r\n,;":
            pos += 1
            continue
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return []
        values.append(value)
    return values


# Parallel calls repeat the marker: `[TOOL_CALLS]a[ARGS]{...}[TOOL_CALLS]b[ARGS]{...}`.
_MISTRAL_HEADER = re.compile(r"[\s,;]*(?:\[TOOL_CALLS\]\s*)?([\w.-]+)\s*\[ARGS\]\s*")


def _mistral_headers(text: str) -> list[Any]:
    """`name[ARGS]{...}` calls, or [] unless the text is only that."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    pos = 0
    while text[pos:].strip(" \t\r\n,;"):
        match = _MISTRAL_HEADER.match(text, pos)
        if match is None:
            return []
        try:
            arguments, pos = decoder.raw_decode(text, match.end())
        except json.JSONDecodeError:
            return []
        out.append({"name": match.group(1), "arguments": arguments})
    return out


def _call_from(obj: Any, declared: Mapping[str, JsonSchema]) -> ParsedCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI's own shape, echoed by some models
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or name not in declared or not isinstance(args, dict):
        return None
    if not _fits(args, declared[name]):
        return None
    return ParsedCall(name, json.dumps(args, ensure_ascii=False))


def _fits(args: Mapping[str, Any], schema: JsonSchema) -> bool:
    """A light check: required properties present, no unknown ones where forbidden."""
    required = schema.get("required", [])
    if isinstance(required, list) and any(key not in args for key in required):
        return False
    props = schema.get("properties")
    return not (schema.get("additionalProperties") is False and isinstance(props, Mapping)
                and any(key not in props for key in args))


_ATTEMPT_WINDOW = 160


def call_attempt(text: str, fmt: ToolFormat) -> bool | None:
    """Whether an answer starts as a tool call: True, False, or None (can't tell yet).

    A call attempt is a JSON object whose first key is "name", right at the start, bare,
    after an opening ```json fence, or after the family's own marker. These are exactly the
    starts ToolCallSplitter holds back, so an engine may still regenerate the answer.
    Never for a family whose calls are not JSON: no grammar can redo those.
    """
    if not fmt.json_body:
        return False
    head = text.lstrip()
    if not head:
        return None
    openers = ("{", "[", "`") + ((fmt.start,) if fmt.start else ())
    if len(text) > _ATTEMPT_WINDOW or not any(
            head.startswith(o) or o.startswith(head) for o in openers):
        return False
    marker = rf"{re.escape(fmt.start)}\s*|" if fmt.start else ""
    pattern = rf'\s*(?:{marker}```(?:json)?[ \t]*\n\s*)?\[?\s*\{{\s*"name"\s*:'
    return True if re.match(pattern, text) else None
