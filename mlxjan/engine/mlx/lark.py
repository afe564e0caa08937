"""Constraints as llguidance Lark grammars, for engines that decode with llguidance (MLX).

llguidance compiles JSON Schema itself (`%json`), so only the frame around a tool call is
written here. A tool-call marker that is one token of the vocabulary (Qwen's `<tool_call>`)
must be matched as that token (`<[id]>`): llguidance never lets special tokens match text.
A forced call in a family whose calls are not JSON gets no JSON frame (see constraints.py):
its grammar allows any token, which is decoding unconstrained.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from mlxjan.chat.constraints import ANY_OBJECT, log_unconstrained_call, tool_call_schema
from mlxjan.chat.tool_calls import JsonSchema, ToolFormat
from mlxjan.types import Constraint, JsonOutput, TextAnswer

# As TEXT_ANSWER_GBNF: the first character cannot open a call, JSON, a fence or a tag.
TEXT_ANSWER_LARK = "start: /[^{\\[`<\\x00-\\x20][\\s\\S]*/\n"
# Any sequence of tokens, special ones included (`<[*]>` is llguidance's any-token).
ANY_TOKENS_LARK = "start: <[*]>*\n"
# The vocabulary's id for a text that is exactly one token, else None.
TokenLookup = Callable[[str], "int | None"]


def lark_for(constraint: Constraint, fmt: ToolFormat, declared: Mapping[str, JsonSchema],
             single_token: TokenLookup) -> str:
    """A Lark grammar (llguidance dialect) whose sentences satisfy `constraint`."""
    if isinstance(constraint, JsonOutput):
        return f"start: %json {_json(constraint.schema or ANY_OBJECT)}\n"
    if isinstance(constraint, TextAnswer):
        return TEXT_ANSWER_LARK
    if not fmt.json_body:
        # The return type stays str for the engines that call this; callers that can skip
        # the matcher check `fmt.json_body` first.
        log_unconstrained_call(fmt)
        return ANY_TOKENS_LARK
    call = _json(tool_call_schema(constraint, fmt, declared))
    parts = []
    if fmt.start:
        parts.append(_marker(fmt.start, single_token))
        if fmt.end:
            parts.append('"\\n"')
    parts.append(f"%json {call}")
    if fmt.end:
        parts += ['"\\n"', _marker(fmt.end, single_token)]
    return "start: " + " ".join(parts) + "\n"


def _marker(text: str, single_token: TokenLookup) -> str:
    token = single_token(text)
    return f"<[{token}]>" if token is not None else json.dumps(text)


# JSON the way models write it (and llama.cpp's grammars allow): one space after ":" and
# ",", no free whitespace, which a weak model would otherwise fill without end.
_JSON_STYLE = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


def _json(schema: Mapping[str, Any]) -> str:
    return json.dumps({**closed_objects(schema), "x-guidance": _JSON_STYLE},
                      ensure_ascii=False)


def closed_objects(schema: Any) -> Any:
    """Objects with listed properties accept no others unless the schema says so.

    JSON Schema allows extra keys by default, which a grammar then lets a model invent;
    llama.cpp's grammar converter closes such objects, and both engines should agree.
    """
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: closed_objects(value) if key not in ("const", "enum", "default", "examples")
           else value for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out
