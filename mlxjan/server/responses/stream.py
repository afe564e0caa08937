"""The Responses API's event sequence, as a state machine over engine events.

response.created and response.in_progress; then for each output item, in order (reasoning,
the message, each function call): output_item.added, its parts and deltas, their .done
events, output_item.done; then response.completed, response.incomplete (max tokens) or
response.failed. Every event carries its place in the stream (`sequence_number`). The
machine also keeps the response object as it grows: a non-streaming request feeds it the
same events and returns `response`. Pure but for the reasoning seal.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from mlxjan.errors import ContextLengthExceededError, MlxjanError, OverloadedError
from mlxjan.server.responses import schemas as s
from mlxjan.types import Delta, Finished, ReasoningDelta, TextDelta, ToolCallDelta, Usage

# Seals a reasoning item's text as its encrypted_content (None: the client did not ask).
Seal = Callable[[str], str]


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_out(usage: Usage) -> s.UsageOut:
    return s.UsageOut(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=s.InputTokensDetails(cached_tokens=usage.cached_tokens),
        output_tokens=usage.completion_tokens,
        output_tokens_details=s.OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
        total_tokens=usage.total_tokens)


def error_code(err: MlxjanError) -> str:
    """A failed response's error code, among those OpenAI's clients know: Codex acts on
    context_length_exceeded (trims its history) and rate_limit_exceeded (retries)."""
    if isinstance(err, ContextLengthExceededError):
        return "context_length_exceeded"
    if isinstance(err, OverloadedError):
        return "rate_limit_exceeded"
    return "invalid_prompt" if err.status < 500 else "server_error"


@dataclass
class _Item:
    """The output item being written."""

    kind: str  # "reasoning", "message" or "function_call"
    id: str
    index: int
    text: str = ""
    call_id: str = ""
    name: str = ""


class ResponseStream:
    def __init__(self, response: s.ResponseOut, *, summary: bool = False,
                 seal: Seal | None = None) -> None:
        """`response`: the response as created (no output yet). `summary`: reasoning also
        goes out as its summary (a local model's summary is its reasoning). `seal`: how
        reasoning items get their encrypted_content, when the client asked for it."""
        self.response = response
        self._summary = summary
        self._seal = seal
        self._open: _Item | None = None
        self._sequence = 0

    @property
    def ended(self) -> bool:
        return self.response.status not in ("queued", "in_progress")

    def start(self) -> list[s.StreamEvent]:
        return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]

    def on_delta(self, delta: Delta) -> list[s.StreamEvent]:
        if isinstance(delta, ToolCallDelta):
            events = self._close() if delta.id is not None else []
            if delta.id is not None:
                events += self._begin("function_call", delta.id, delta.name or "")
            if delta.arguments and self._open is not None \
                    and self._open.kind == "function_call":
                self._open.text += delta.arguments
                events.append(self._numbered(s.ArgumentsDeltaEvent(
                    item_id=self._open.id, output_index=self._open.index,
                    delta=delta.arguments)))
            return events
        if not delta.text:
            return []
        if isinstance(delta, ReasoningDelta):
            return self._write("reasoning", delta.text)
        assert isinstance(delta, TextDelta)
        return self._write("message", delta.text)

    def finish(self, finished: Finished) -> list[s.StreamEvent]:
        cut = finished.reason == "length"
        events = self._close("incomplete" if cut else "completed")
        self.response.usage = usage_out(finished.usage)
        if cut:
            self.response.status = "incomplete"
            self.response.incomplete_details = s.IncompleteDetails(reason="max_output_tokens")
            return [*events, self._lifecycle("response.incomplete")]
        self.response.status = "completed"
        self.response.completed_at = int(time.time())
        return [*events, self._lifecycle("response.completed")]

    def fail(self, err: MlxjanError) -> list[s.StreamEvent]:
        """The 200 has been sent: the error ends the stream as response.failed."""
        events = self._close("incomplete")  # what was written stays, marked incomplete
        self.response.status = "failed"
        self.response.error = s.ErrorOut(code=error_code(err), message=err.message)
        return [*events, self._lifecycle("response.failed")]

    def cancel(self) -> None:
        self.response.status = "cancelled"

    # --- items -------------------------------------------------------------------------

    def _write(self, kind: str, text: str) -> list[s.StreamEvent]:
        events: list[s.StreamEvent] = []
        if self._open is None or self._open.kind != kind:
            events = self._close()
            events += self._begin(kind)
        item = self._open
        assert item is not None
        item.text += text
        if kind == "message":
            events.append(self._numbered(s.TextDeltaEvent(
                item_id=item.id, output_index=item.index, content_index=0, delta=text)))
            return events
        events.append(self._numbered(s.ReasoningTextDeltaEvent(
            item_id=item.id, output_index=item.index, content_index=0, delta=text)))
        if self._summary:
            events.append(self._numbered(s.SummaryTextDeltaEvent(
                item_id=item.id, output_index=item.index, summary_index=0, delta=text)))
        return events

    def _begin(self, kind: str, call_id: str = "", name: str = "") -> list[s.StreamEvent]:
        prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}[kind]
        item = self._open = _Item(kind, item_id(prefix), len(self.response.output),
                                  call_id=call_id, name=name)
        shown = self._item(item, "in_progress")
        self.response.output.append(shown)
        events = [self._numbered(s.OutputItemEvent(
            type="response.output_item.added", output_index=item.index, item=shown))]
        if kind == "message":
            events.append(self._part("response.content_part.added", item,
                                     s.OutputTextOut(text="")))
        elif kind == "reasoning":
            events.append(self._part("response.content_part.added", item,
                                     s.ReasoningText(text="")))
            if self._summary:
                events.append(self._numbered(s.SummaryPartEvent(
                    type="response.reasoning_summary_part.added", item_id=item.id,
                    output_index=item.index, summary_index=0, part=s.SummaryText(text=""))))
        return events

    def _close(self, status: s.ItemStatus = "completed") -> list[s.StreamEvent]:
        item, self._open = self._open, None
        if item is None:
            return []
        done = self._item(item, status)
        self.response.output[item.index] = done
        events: list[s.StreamEvent] = []
        if isinstance(done, s.OutputMessage):
            events += [self._numbered(s.TextDoneEvent(
                item_id=item.id, output_index=item.index, content_index=0, text=item.text)),
                self._part("response.content_part.done", item, done.content[0])]
        elif isinstance(done, s.ReasoningOut):
            events += [self._numbered(s.ReasoningTextDoneEvent(
                item_id=item.id, output_index=item.index, content_index=0, text=item.text)),
                self._part("response.content_part.done", item, done.content[0])]
            if self._summary:
                events += [self._numbered(s.SummaryTextDoneEvent(
                    item_id=item.id, output_index=item.index, summary_index=0,
                    text=item.text)),
                    self._numbered(s.SummaryPartEvent(
                        type="response.reasoning_summary_part.done", item_id=item.id,
                        output_index=item.index, summary_index=0, part=done.summary[0]))]
        else:
            events.append(self._numbered(s.ArgumentsDoneEvent(
                item_id=item.id, output_index=item.index, name=item.name,
                arguments=item.text)))
        events.append(self._numbered(s.OutputItemEvent(
            type="response.output_item.done", output_index=item.index, item=done)))
        return events

    def _item(self, item: _Item, status: s.ItemStatus
              ) -> s.OutputMessage | s.ReasoningOut | s.FunctionCallOut:
        """The item as sent: empty while in progress, whole when done."""
        done = status != "in_progress"
        text = item.text if done else ""
        if item.kind == "message":
            return s.OutputMessage(id=item.id, status=status,
                                   content=[s.OutputTextOut(text=text)] if done else [])
        if item.kind == "function_call":
            return s.FunctionCallOut(id=item.id, call_id=item.call_id, name=item.name,
                                     arguments=text, status=status)
        summary = [s.SummaryText(text=text)] if done and self._summary else []
        sealed = self._seal(text) if done and self._seal is not None else None
        return s.ReasoningOut(id=item.id, summary=summary,
                              content=[s.ReasoningText(text=text)] if done else [],
                              encrypted_content=sealed, status=status)

    def _part(self, kind: str, item: _Item, part: s.OutputTextOut | s.ReasoningText
              ) -> s.StreamEvent:
        return self._numbered(s.ContentPartEvent(
            type=kind, item_id=item.id, output_index=item.index,  # type: ignore[arg-type]
            content_index=0, part=part))

    def _lifecycle(self, kind: str) -> s.StreamEvent:
        snapshot = self.response.model_copy(deep=True)
        return self._numbered(s.ResponseLifecycleEvent(type=kind,  # type: ignore[arg-type]
                                                       response=snapshot))

    def _numbered(self, event: s.StreamEvent) -> s.StreamEvent:
        event.sequence_number = self._sequence
        self._sequence += 1
        return event
