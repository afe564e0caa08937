"""Anthropic's streaming event sequence, as a small state machine over engine events.

message_start, then for each content block: content_block_start, its deltas,
content_block_stop (indices in order, one block open at a time), then message_delta with the
stop reason and cumulative usage, then message_stop. A thinking block's deltas are
thinking_delta, then one signature_delta (the seal of its whole text) right before its stop.
Pure but for the seal: it returns (event name, payload) pairs and leaves the SSE framing to
`server/sse.py`.
"""

from __future__ import annotations

from typing import Literal

from mlxjan.server.anthropic import schemas as s
from mlxjan.server.anthropic.convert import (
    ThinkingOutput,
    stop_reason,
    tool_use_id,
    usage_out,
)
from mlxjan.types import Delta, Finished, ReasoningDelta, Started, ToolCallDelta

BlockType = Literal["thinking", "text", "tool_use"]
StreamEvent = tuple[str, s.StreamEventOut]  # (the SSE event name, its data)


def _event(event: s.StreamEventOut) -> StreamEvent:
    return event.type, event


class MessageStream:
    def __init__(self, message_id: str, model: str,
                 thinking: ThinkingOutput | None = None) -> None:
        """`thinking`: how reasoning goes out; None (thinking off) drops it."""
        self._id = message_id
        self._model = model
        self._thinking = thinking
        self._reasoning = ""  # the open thinking block's text, sealed as it closes
        self._open: BlockType | None = None
        self._next_index = 0
        self._prompt_tokens = 0
        self._cached_tokens = 0
        self.finished = False

    def start(self, started: Started) -> list[StreamEvent]:
        self._prompt_tokens, self._cached_tokens = started.prompt_tokens, started.cached_tokens
        message = s.MessageOut(
            id=self._id, model=self._model, content=[], stop_reason=None, stop_sequence=None,
            usage=usage_out(self._prompt_tokens, self._cached_tokens, 0),
        )
        return [_event(s.MessageStart(message=message))]

    def on_delta(self, delta: Delta) -> list[StreamEvent]:
        if isinstance(delta, ToolCallDelta):
            return self._on_tool_call(delta)
        if isinstance(delta, ReasoningDelta):
            return self._on_reasoning(delta)
        if not delta.text:
            return []
        events = self._switch_to("text", s.TextOut(text=""))
        events.append(_event(s.ContentBlockDelta(index=self._next_index - 1,
                                                 delta=s.TextDeltaOut(text=delta.text))))
        return events

    def _on_reasoning(self, delta: ReasoningDelta) -> list[StreamEvent]:
        if self._thinking is None or not delta.text:
            return []
        events = self._switch_to("thinking", s.ThinkingOut(thinking="", signature=""))
        self._reasoning += delta.text
        shown = self._thinking.text(delta.text)
        if shown:
            events.append(_event(s.ContentBlockDelta(
                index=self._next_index - 1, delta=s.ThinkingDeltaOut(thinking=shown))))
        return events

    def _on_tool_call(self, delta: ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if delta.id is not None:  # a new call: always its own block
            events = self._close()
            events += self._switch_to("tool_use", s.ToolUseStart(id=tool_use_id(delta.id),
                                                                 name=delta.name))
        if delta.arguments:
            events.append(_event(s.ContentBlockDelta(
                index=self._next_index - 1,
                delta=s.InputJsonDelta(partial_json=delta.arguments))))
        return events

    def finish(self, finished: Finished) -> list[StreamEvent]:
        events = self._close()
        usage = usage_out(self._prompt_tokens, self._cached_tokens,
                          finished.usage.completion_tokens)
        events.append(_event(s.MessageDelta(
            delta=s.MessageDeltaBody(stop_reason=stop_reason(finished),
                                     stop_sequence=finished.stop_sequence),
            usage=usage)))
        events.append(_event(s.MessageStop()))
        self.finished = True
        return events

    @staticmethod
    def ping() -> StreamEvent:
        return _event(s.Ping())

    def _switch_to(self, block: BlockType,
                   content_block: s.ThinkingOut | s.TextOut | s.ToolUseStart
                   ) -> list[StreamEvent]:
        if self._open == block:
            return []
        events = self._close()
        events.append(_event(s.ContentBlockStart(index=self._next_index,
                                                 content_block=content_block)))
        self._open = block
        self._next_index += 1
        return events

    def _close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        index = self._next_index - 1
        events: list[StreamEvent] = []
        if self._open == "thinking" and self._thinking is not None:
            seal = self._thinking.block(self._reasoning).signature
            events.append(_event(s.ContentBlockDelta(
                index=index, delta=s.SignatureDeltaOut(signature=seal))))
            self._reasoning = ""
        self._open = None
        events.append(_event(s.ContentBlockStop(index=index)))
        return events
