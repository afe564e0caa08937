"""llama.cpp grammars (GBNF) that make tool calls and JSON answers valid by construction.

Built from JSON Schema with llama.cpp's own schema converter (the `llama_cpp.llama_grammar`
module, plain Python). A forced tool call is wrapped in the model family's native markers
(e.g. `<tool_call>...</tool_call>`), so the template's own parser and the model's training
both still apply. A schema the converter cannot take gives None: the caller then decodes
unconstrained and logs why. So does a forced call in a family whose calls are not JSON
(Qwen3-Coder XML, GLM, pythonic, ...): a JSON grammar would teach the model a syntax its
parser does not read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mlxjan.chat.constraints import ANY_OBJECT, log_unconstrained_call, tool_call_schema
from mlxjan.chat.tool_calls import JsonSchema, ToolFormat
from mlxjan.types import Constraint, ForcedToolCall, JsonOutput, TextAnswer

log = logging.getLogger(__name__)
# An answer in words: its first character cannot open a call, JSON, a code fence or a tag
# (nor be blank, which would only defer that choice); anything may follow.
TEXT_ANSWER_GBNF = 'root ::= [^{\\[`<\\x00-\\x20] .*\n'


def gbnf_for(constraint: Constraint, fmt: ToolFormat,
             declared: Mapping[str, JsonSchema]) -> str | None:
    # llama.cpp's converter reports many unsupported schemas with `assert` (remote $ref,
    # unknown type, unbalanced pattern) and some malformed ones with AttributeError.
    if isinstance(constraint, TextAnswer):
        return TEXT_ANSWER_GBNF
    if isinstance(constraint, ForcedToolCall) and not fmt.json_body:
        log_unconstrained_call(fmt)
        return None
    schemas = [constraint.schema] if isinstance(constraint, JsonOutput) else list(
        declared.values())
    if any(_has_remote_ref(schema) for schema in schemas):
        # The converter can fetch remote $refs; no request may make the server fetch a URL.
        log.warning("schema with a non-local $ref; decoding unconstrained")
        return None
    try:
        if isinstance(constraint, JsonOutput):
            return _json_rules(constraint.schema or ANY_OBJECT, "")  # "" names it root
        return _tool_call_grammar(constraint, fmt, declared)
    except (ValueError, LookupError, TypeError, AttributeError, AssertionError,
            RecursionError, NotImplementedError) as exc:
        log.warning("cannot build a grammar for %s (%s); decoding unconstrained",
                    type(constraint).__name__, exc)
        return None


def _has_remote_ref(schema: object) -> bool:
    if isinstance(schema, Mapping):
        ref = schema.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return True
        return any(_has_remote_ref(value) for value in schema.values())
    if isinstance(schema, list):
        return any(_has_remote_ref(value) for value in schema)
    return False


def _tool_call_grammar(constraint: ForcedToolCall, fmt: ToolFormat,
                       declared: Mapping[str, JsonSchema]) -> str:
    rules = _json_rules(tool_call_schema(constraint, fmt, declared), "call")
    prefix = json.dumps((fmt.start or "") + ("\n" if fmt.end else ""))
    suffix = json.dumps("\n" + fmt.end) if fmt.end else '""'
    return f"root ::= {prefix} call {suffix}\n{rules}"


ANY_TYPE = ["string", "number", "integer", "boolean", "object", "array", "null"]
# Keywords that say what a value is; a schema with none of them accepts any value.
_ASSERTIONS = frozenset({
    "type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "properties", "items",
    "prefixItems", "additionalProperties", "pattern", "format", "not",
})
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


# llama.cpp's converter unrolls bounded repetition into nested rules: Claude Code's
# `maxLength: 524288` alone made a 4 MB grammar that crashed llama.cpp. Large bounds are
# dropped (the text stays valid JSON of the right type), and oversized grammars refused.
_MAX_BOUND = 256
_BOUNDS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")
MAX_GRAMMAR_BYTES = 256 * 1024


def grammar_friendly(schema: Any) -> Any:
    """The schema as llama.cpp's converter can take it: every "any value" subschema (e.g.
    only a description, which it refuses) spelled out as a union of all types, and length
    or count bounds above _MAX_BOUND dropped."""
    if not isinstance(schema, Mapping):
        return schema
    out = {k: v for k, v in schema.items()
           if not (k in _BOUNDS and isinstance(v, int) and v > _MAX_BOUND)}
    if not _ASSERTIONS & out.keys():
        out["type"] = ANY_TYPE
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {k: grammar_friendly(v) for k, v in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [grammar_friendly(v) for v in out[key]]
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), Mapping):
            out[key] = grammar_friendly(out[key])
    return out


def _json_rules(schema: Mapping[str, Any], name: str) -> str:
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False,
                                raw_pattern=False)
    resolved = converter.resolve_refs(grammar_friendly(schema), "request")
    converter.visit(resolved, name)
    grammar: str = converter.format_grammar()
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise ValueError(f"the grammar would be {len(grammar)} bytes")
    return grammar


