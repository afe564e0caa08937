"""Splitting a streamed answer into text and tool calls as it is generated.

Text is passed on as soon as it cannot be the start of a call. A call is held until it is
complete, then sent as its id and name followed by its arguments, or, if it does not parse as
a call to a declared tool, sent as the text it was. Every family works this way, through its
format's start and end markers (a family without an end marker runs to the end of the answer).
With `max_calls`, the answer ends at that many calls: later calls and text are dropped, and
`full` tells the decode loop to stop. Harmony's calls are not in the answer's text: the
reasoning splitter finds them whole, and `call` checks and sends them the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Literal

from mlxjan.chat.tool_calls import (
    JsonSchema,
    ParsedCall,
    ToolFormat,
    declared_tools,
    new_call_id,
    parse_body,
    parse_calls,
    recover_calls,
)
from mlxjan.types import GenerationRequest, TextDelta, ToolCall, ToolCallDelta

Out = TextDelta | ToolCallDelta
Mode = Literal["start", "text", "call", "json"]


def splitter_for(request: GenerationRequest, fmt: ToolFormat) -> ToolCallSplitter | None:
    """The splitter an engine runs a request's answer through; None without tools."""
    declared = declared_tools(request.tools)
    if not declared:
        return None
    return ToolCallSplitter(fmt, declared,
                            max_calls=None if request.parallel_tool_calls else 1)


class ToolCallSplitter:
    def __init__(self, fmt: ToolFormat, declared: Mapping[str, JsonSchema], *,
                 max_calls: int | None = None) -> None:
        self._fmt = fmt
        self._declared = declared
        self._max_calls = max_calls
        self._buf = ""
        self._mode: Mode = "start"
        self.calls = 0

    @property
    def full(self) -> bool:
        """The answer has made all the calls it may: nothing after them is wanted."""
        return self._max_calls is not None and self.calls >= self._max_calls

    def reset(self) -> None:
        """Forget what was held (the engine is regenerating the answer, constrained)."""
        if self.calls:
            raise RuntimeError("cannot reset after tool calls were sent")
        self._buf, self._mode = "", "start"

    def feed(self, text: str) -> list[Out]:
        if self.full:
            return []
        self._buf += text
        out: list[Out] = []
        while True:
            before = (self._mode, len(self._buf))
            out.extend(self._step())
            if self.full:
                self._buf = ""  # what follows the last allowed call is not sent
                return out
            if (self._mode, len(self._buf)) == before:
                return out

    def finish(self) -> list[Out]:
        return self._drain()

    def call(self, name: str, arguments: str) -> list[Out]:
        """A whole call found outside the answer's text (harmony's commentary channel): sent
        as a call if it is one to a declared tool with a JSON object of fitting arguments,
        else as the text of its arguments. What was held before it goes out first."""
        out = self._drain()
        self._mode = "text"
        if self.full:
            return out
        calls = parse_calls(json.dumps({"name": name, "arguments": arguments}), self._declared)
        return out + (self._emit(calls) if calls else _text(arguments))

    def _drain(self) -> list[Out]:
        """Everything held, sent as what it turned out to be (at the end, or before a call
        that comes whole)."""
        out = self.feed("")
        body, self._buf = self._buf, ""
        if self.full:
            return out
        if self._mode == "call":
            calls = parse_body(body, self._fmt, self._declared)
            return out + (self._emit(calls) if calls else _text((self._fmt.start or "") + body))
        if self._mode == "json":
            calls = recover_calls(body, self._declared)
            return out + (self._emit(calls) if calls else _text(body))
        return out + (_text(body) if body.strip() or not self.calls else [])

    def _step(self) -> list[Out]:
        if self._mode == "start":
            return self._classify_start()
        if self._mode == "text":
            return self._scan_text()
        if self._mode == "call" and self._fmt.end is not None:
            return self._close_call(self._fmt.end)
        return []  # "json", or a call that runs to the end: decided in finish()

    def _classify_start(self) -> list[Out]:
        head = self._buf.lstrip()
        start = self._fmt.start
        if not head or (start and start.startswith(head)) or "```".startswith(head):
            return []  # not enough seen yet
        if start and head.startswith(start):
            self._mode, self._buf = "call", head[len(start):]
            return []
        if head.startswith(("{", "[")):
            self._mode = "json"
            return []
        if head.startswith("```"):
            if "\n" not in head:
                return []
            language = head[3:head.index("\n")].strip().lower()
            if language in ("", "json"):
                self._mode = "json"
                return []
        self._mode = "text"
        return []

    def _scan_text(self) -> list[Out]:
        start = self._fmt.start
        if start is None:
            text, self._buf = self._buf, ""
            return _text(text)
        at = self._buf.find(start)
        if at >= 0:
            text, self._buf = self._buf[:at], self._buf[at + len(start):]
            self._mode = "call"
            if self.calls and not text.strip():
                return []  # the line breaks between parallel calls are not an answer
            return _text(text)
        cut = len(self._buf) - _partial_suffix(self._buf, start)
        if self.calls and not self._buf[:cut].strip():
            # Whitespace after a call is held: dropped if another call or the end follows,
            # kept if text does (the same whatever the chunking).
            return []
        text, self._buf = self._buf[:cut], self._buf[cut:]
        return _text(text)

    def _close_call(self, end: str) -> list[Out]:
        at = self._buf.find(end)
        if at < 0:
            return []
        body, self._buf = self._buf[:at], self._buf[at + len(end):]
        self._mode = "text"
        calls = parse_body(body, self._fmt, self._declared)
        if calls is None:
            return _text(f"{self._fmt.start}{body}{end}")
        return self._emit(calls)

    def _emit(self, calls: list[ParsedCall]) -> list[Out]:
        out: list[Out] = []
        if self._max_calls is not None:
            calls = calls[:self._max_calls - self.calls]
        for call in calls:
            out.append(ToolCallDelta(self.calls, new_call_id(), call.name, ""))
            out.append(ToolCallDelta(self.calls, None, None, call.arguments))
            self.calls += 1
        return out


def assemble_calls(deltas: Iterable[ToolCallDelta]) -> list[ToolCall]:
    """Whole calls from their deltas (id and name first, then argument fragments)."""
    calls: dict[int, ToolCall] = {}
    for d in deltas:
        if d.id is not None and d.name is not None:
            calls[d.index] = ToolCall(d.id, d.name, d.arguments)
        else:
            call = calls[d.index]
            calls[d.index] = ToolCall(call.id, call.name, call.arguments + d.arguments)
    return [calls[i] for i in sorted(calls)]


def _text(text: str) -> list[Out]:
    return [TextDelta(text)] if text else []


def _partial_suffix(buf: str, marker: str) -> int:
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0
