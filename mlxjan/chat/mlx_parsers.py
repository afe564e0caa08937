"""mlx-lm's tool-call parsers (`mlx_lm.tool_parsers.<name>`), for both engines.

Imported lazily, on the first call of a family that needs one: importing mlx-lm takes about
a second, and a plain Linux install has no mlx-lm at all. Without it those families' calls
stay text (logged once per family); the JSON-bodied families never come here.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)
# (call body, OpenAI-shaped tools) -> {"name", "arguments"} or a list of them; raises on
# a body it cannot read.
ParseFn = Callable[[str, "list[dict[str, Any]] | None"], Any]


@functools.cache
def load_parser(name: str) -> ParseFn | None:
    """mlx-lm's `parse_tool_call` for a family, or None (logged once) without mlx-lm."""
    try:
        module = importlib.import_module(f"mlx_lm.tool_parsers.{name}")
    except (ImportError, OSError) as exc:  # OSError: mlx's native library fails to load
        log.warning("mlx-lm's %r tool-call parser is unavailable (%s); such calls are "
                    "returned as text", name, exc)
        return None
    parse = getattr(module, "parse_tool_call", None)
    if not callable(parse):
        log.warning("mlx_lm.tool_parsers.%s has no parse_tool_call; such calls are "
                    "returned as text", name)
        return None
    fn: ParseFn = parse
    return fn


def run_parser(name: str, body: str,
               declared: Mapping[str, Mapping[str, Any]]) -> list[Any] | None:
    """What mlx-lm's parser makes of a call's body, as a list of candidate calls (still to
    validate), or None when it cannot read it."""
    parse = load_parser(name)
    if parse is None:
        return None
    try:
        found = parse(body, _openai_tools(declared))
    except Exception as exc:  # model text is arbitrary; parsers fail on it in many ways
        log.debug("mlx-lm's %r parser could not read a tool call: %r", name, exc)
        return None
    return found if isinstance(found, list) else [found]


def _openai_tools(declared: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools as mlx-lm's parsers read them (they use the schemas to type values)."""
    return [{"type": "function", "function": {"name": name, "parameters": dict(schema)}}
            for name, schema in declared.items()]
