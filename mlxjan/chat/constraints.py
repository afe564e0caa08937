"""What a request constrains, the same for every engine: the tool choice, and the JSON
Schema of one tool call in a family's native shape. Each engine turns a Constraint into
its own grammar (engine/llamacpp/grammar.py: GBNF; engine/mlx/lark.py: llguidance).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from mlxjan.chat.tool_calls import JsonSchema, ToolFormat, declared_tools
from mlxjan.errors import InvalidRequestError
from mlxjan.types import ForcedToolCall, ToolSpec

log = logging.getLogger(__name__)
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def log_unconstrained_call(fmt: ToolFormat) -> None:
    # Info, not warning: it is how these families work, logged for every request with tools
    # (an engine also asks for a grammar to redo a call begun in free text).
    log.info("%s tool calls are not JSON; no grammar forces them, decoding unconstrained",
             fmt.name)


def tool_call_schema(constraint: ForcedToolCall, fmt: ToolFormat,
                     declared: Mapping[str, JsonSchema]) -> dict[str, Any]:
    """JSON Schema of one call: {"name": <a declared tool>, <args key>: <its parameters>}."""
    names = [constraint.name] if constraint.name else list(declared)
    variants = [{
        "type": "object",
        "properties": {"name": {"const": name},
                       fmt.args_key: dict(declared[name]) or ANY_OBJECT},
        "required": ["name", fmt.args_key],
        "additionalProperties": False,
    } for name in names]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


ToolChoice = Literal["auto", "none", "required"]


def apply_tool_choice(tools: tuple[ToolSpec, ...], choice: ToolChoice,
                      name: str | None = None, *, param: str = "tool_choice"
                      ) -> tuple[tuple[ToolSpec, ...], ForcedToolCall | None]:
    """The tools to offer and the constraint for a tool choice, the same for every API.

    "none" offers no tools (so none can be called); "required" forces a call to one of them;
    a name forces that tool, which must be declared.
    """
    if choice == "none":
        return (), None
    if choice == "auto" and name is None:
        return tools, None
    if not tools:
        raise InvalidRequestError(f"{param} asks for a tool call but no tools are given.",
                                  param=param)
    if name is not None and name not in declared_tools(tools):
        raise InvalidRequestError(f"{param} names '{name}', which is not among the tools.",
                                  param=param)
    return tools, ForcedToolCall(name)


def check_reasoning_room(budget: int | None, max_tokens: int | None, *, param: str) -> None:
    """A reasoning budget must leave room to answer within max_tokens (both APIs)."""
    if budget is not None and max_tokens is not None and budget >= max_tokens:
        raise InvalidRequestError(
            f"{param} ({budget}) leaves no room to answer within max_tokens ({max_tokens}): "
            "make it smaller than max_tokens.", param=param)
