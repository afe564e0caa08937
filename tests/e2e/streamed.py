"""What a streamed OpenAI chat completion adds up to: its text, its tool calls, its finish."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class StreamedAnswer:
    text: str
    calls: list[tuple[str, str]]  # (function name, arguments text), in index order
    finish: str | None


def assemble(chunks: Iterable[Any]) -> StreamedAnswer:
    text, finish = "", None
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for chunk in chunks:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            if call.function and call.function.name:
                names[call.index] = call.function.name
            args[call.index] = args.get(call.index, "") + (
                call.function.arguments or "" if call.function else "")
        finish = chunk.choices[0].finish_reason or finish
    return StreamedAnswer(text, [(names[i], args[i]) for i in sorted(names)], finish)
