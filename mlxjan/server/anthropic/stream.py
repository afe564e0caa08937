"""Anthropic's streaming event sequence, as a small state machine over engine events.

message_start, then for each content block: content_block_start, its deltas,
content_block_stop (indices in order, one block open at a time), then message_delta with the
stop reason and cumulative usage, then message_stop. Pure: it returns (event name, payload)
pairs and leaves the SSE framing to `server/sse.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from mlxjan.server.anthropic import schemas as s
from mlxjan.server.anthropic.convert import stop_reason, tool_use_id, usage_out
from mlxjan.types import Finished, Started, TextDelta, ToolCallDelta

BlockType = Literal["text", "tool_use"]
StreamEvent = tuple[str, BaseModel]


class Payload(BaseModel):
    """A stream event body: the `type` plus whatever fields that event carries."""

    model_config = {"extra": "allow"}
    type: str


def _event(kind: str, **fields: Any) -> StreamEvent:
    return kind, Payload(type=kind, **fields)


class MessageStream:
    def __init__(self, message_id: str, model: str) -> None:
        self._id = message_id
        self._model = model
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
        return [_event("message_start", message=message.model_dump(mode="json"))]

    def on_delta(self, delta: TextDelta | ToolCallDelta) -> list[StreamEvent]:
        if isinstance(delta, ToolCallDelta):
            return self._on_tool_call(delta)
        if not delta.text:
            return []
        events = self._switch_to("text", {"type": "text", "text": ""})
        events.append(_event("content_block_delta", index=self._next_index - 1,
                             delta={"type": "text_delta", "text": delta.text}))
        return events

    def _on_tool_call(self, delta: ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if delta.id is not None:  # a new call: always its own block
            events = self._close()
            events += self._switch_to("tool_use", {
                "type": "tool_use", "id": tool_use_id(delta.id), "name": delta.name,
                "input": {}})
        if delta.arguments:
            events.append(_event("content_block_delta", index=self._next_index - 1,
                                 delta={"type": "input_json_delta",
                                        "partial_json": delta.arguments}))
        return events

    def finish(self, finished: Finished) -> list[StreamEvent]:
        events = self._close()
        usage = usage_out(self._prompt_tokens, self._cached_tokens,
                          finished.usage.completion_tokens)
        events.append(_event("message_delta",
                             delta={"stop_reason": stop_reason(finished),
                                    "stop_sequence": finished.stop_sequence},
                             usage=usage.model_dump()))
        events.append(_event("message_stop"))
        self.finished = True
        return events

    @staticmethod
    def ping() -> StreamEvent:
        return _event("ping")

    def _switch_to(self, block: BlockType, content_block: dict[str, Any]) -> list[StreamEvent]:
        if self._open == block:
            return []
        events = self._close()
        events.append(_event("content_block_start", index=self._next_index,
                             content_block=content_block))
        self._open = block
        self._next_index += 1
        return events

    def _close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        self._open = None
        return [_event("content_block_stop", index=self._next_index - 1)]
