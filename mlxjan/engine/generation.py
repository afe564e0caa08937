"""The decode loop every engine shares: tokens in, Started/TextDelta/Finished events out.

Engines supply an iterator of sampled tokens; this loop owns the stop rules (end of
generation, stop strings, max tokens, cancellation) so they behave the same everywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from mlxjan.chat.reasoning import ChannelCall, ReasoningOut, ReasoningSplitter
from mlxjan.chat.tool_calls import JsonSchema, ToolFormat, call_attempt
from mlxjan.chat.tool_stream import ToolCallSplitter
from mlxjan.engine.text import DeltaAssembler
from mlxjan.engine.thread import Emit
from mlxjan.errors import ContextLengthExceededError
from mlxjan.types import (
    Finished,
    FinishReason,
    GenerationRequest,
    ReasoningDelta,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    Usage,
)

G = TypeVar("G")


@dataclass(frozen=True)
class CallRedo(Generic[G]):
    """With tools on offer and no constraint, a tool call begun in free text is redone: when
    `check(text)` says so, the answer starts again under `constraint` (llama.cpp: a grammar;
    MLX: a factory of fresh matchers), so the call comes out valid, in the family's native
    syntax, and greedily: the arguments are data, where sampling noise only adds mistakes."""

    check: Callable[[str], bool | None]
    constraint: G
    sampling: SamplingParams


def call_redo(request: GenerationRequest, fmt: ToolFormat, declared: Mapping[str, JsonSchema],
              enabled: bool, constraint: Callable[[], G | None]) -> CallRedo[G] | None:
    """The redo for this request, if it has one: `constraint()` builds the forced call's
    constraint (None: this engine cannot force such a call)."""
    if not declared or request.constraint is not None or not enabled:
        return None
    built = constraint()
    if built is None:
        return None
    return CallRedo(lambda text: call_attempt(text, fmt), built,
                    replace(request.sampling, temperature=0.0))


def answer_room(prompt_tokens: int, context_length: int, sampling: SamplingParams) -> int:
    """How many tokens the answer may have: `max_tokens`, within what the context leaves.
    A prompt that leaves no room is refused, before the request joins a batch."""
    room = context_length - prompt_tokens
    if room < 1:
        raise ContextLengthExceededError(prompt_tokens, context_length)
    return min(sampling.max_tokens or room, room)


@dataclass(frozen=True)
class SampledToken:
    piece: bytes
    end_of_generation: bool = False
    logprob: TokenLogprob | None = None
    # The engine discarded the answer sampled so far (everything after the reasoning) and
    # starts it again, constrained; only valid while the tool-call splitter holds it all.
    restart: bool = False
    # Written by the server, not sampled (the reasoning's end marker once its budget is
    # spent): part of the output and its count, never of the reasoning's.
    forced: bool = False


@dataclass(frozen=True)
class Reasoning:
    """How an answer's reasoning is split off (engine/reasoning.py plans it)."""

    splitter: ReasoningSplitter
    close: str  # what the server writes to end the reasoning
    budget: int | None  # reasoning tokens allowed; None: no limit but max_tokens


def decode_loop(
    tokens: Iterator[SampledToken],
    sampling: SamplingParams,
    *,
    prompt_tokens: int,
    cached_tokens: int,
    max_new_tokens: int,
    emit: Emit,
    cancelled: threading.Event,
    tool_calls: ToolCallSplitter | None = None,
) -> None:
    """Drain `tokens` into events until a stop rule fires; emits exactly one Finished.

    With `tool_calls`, text passes through it and calls come out as ToolCallDeltas.
    """
    decoder = Decoder(sampling, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                      max_new_tokens=max_new_tokens, emit=emit, tool_calls=tool_calls)
    for token in tokens:
        if cancelled.is_set():
            return
        if decoder.push(token):
            break
    if cancelled.is_set():
        return
    decoder.finish()


class Decoder:
    """The stop rules over tokens pushed one at a time (by decode_loop, or by a batch that
    steps several answers together); `finish` emits the one Finished event.

    With `reasoning`, output passes through its splitter first: reasoning comes out as
    ReasoningDeltas and counts against its budget; once the budget is spent, or when the
    model ends inside its reasoning, `take_forced` hands the engine the end marker to write
    (an end of generation that asked for one returns False from `push`). `answer_start`
    tells the engine where the answer began (a grammar applies from there; a redo restarts
    from there). With `redo_check`, the answer's text so far is checked after each token;
    `redo_wanted` asks the engine to restart the answer constrained.
    """

    def __init__(self, sampling: SamplingParams, *, prompt_tokens: int, cached_tokens: int,
                 max_new_tokens: int, emit: Emit,
                 tool_calls: ToolCallSplitter | None = None,
                 reasoning: Reasoning | None = None,
                 redo_check: Callable[[str], bool | None] | None = None) -> None:
        self._sampling = sampling
        self._assembler = DeltaAssembler(sampling.stop)
        self._out = _Output(emit, tool_calls, reasoning.splitter if reasoning else None)
        self._reasoning = reasoning
        self._redo_check = redo_check
        self._emit = emit
        self._usage = (prompt_tokens, cached_tokens)
        self._max_new_tokens = max_new_tokens
        self.generated = 0
        self.reasoning_tokens = 0
        self._forced = ""
        self._closing = False  # the end marker was asked for: never twice
        self._reason: FinishReason = "length"
        # Generated tokens before the answer began; None while reasoning may still come.
        self.answer_start: int | None = None if reasoning else 0
        self.redo_wanted = False

    @property
    def reasoning(self) -> bool:
        """Inside the reasoning now: a grammar waits, and tokens count against its budget."""
        return self._reasoning is not None and self._reasoning.splitter.reasoning

    def push(self, token: SampledToken) -> bool:
        """Take one token; True once the answer is complete (call `finish` then)."""
        if token.end_of_generation:
            if self._close_unanswered():
                return False
            self._reason = "stop"
            return True
        if token.restart:
            self._restart()
            return False
        was_reasoning = self.reasoning
        self.generated += 1
        self._out.send(self._assembler.push(token.piece, token.logprob))
        if not token.forced and (was_reasoning or self.reasoning):
            self.reasoning_tokens += 1  # the markers count: the model wrote them
        self._after_push()
        if self._assembler.stop_sequence is not None or self._out.full:
            self._reason = "stop"  # a full splitter: the answer has made all the calls it may
            return True
        return self.generated >= self._max_new_tokens

    def _after_push(self) -> None:
        reasoning = self._reasoning
        if reasoning is None:
            self._check_redo()
            return
        if self.answer_start is None and reasoning.splitter.answering:
            self.answer_start = self.generated
        if self.answer_start is not None:
            self._check_redo()
        elif (reasoning.budget is not None and self.reasoning_tokens >= reasoning.budget
                and self.reasoning and not self._closing):
            self._forced, self._closing = reasoning.close, True

    def _close_unanswered(self) -> bool:
        """The model ended inside its reasoning, with no answer (small models answer inside
        the block a template opened, then stop): ask the engine to write the end marker, so
        the model goes on to answer. Once, and only with room left."""
        if (self._reasoning is None or not self.reasoning or self._closing
                or self.generated >= self._max_new_tokens):
            return False
        self._forced, self._closing = self._reasoning.close, True
        return True

    def _check_redo(self) -> None:
        if self._redo_check is None:
            return
        decision = self._redo_check(self._out.answer_text)
        if decision is not None:
            self._redo_check = None
            self.redo_wanted = bool(decision)

    def take_forced(self) -> str:
        """Text the engine must write next as if sampled (push it with forced=True): the
        reasoning's end marker once its budget is spent; "" when there is none."""
        forced, self._forced = self._forced, ""
        return forced

    def _restart(self) -> None:
        self._assembler = DeltaAssembler(self._sampling.stop)
        self.generated = self.answer_start or 0
        self.redo_wanted = False
        self._out.restart()

    def finish(self) -> None:
        assembler, out, reason = self._assembler, self._out, self._reason
        stop_sequence = assembler.stop_sequence
        if stop_sequence is None and not out.full:
            out.send(assembler.finish())
            if assembler.stop_sequence is not None:
                stop_sequence, reason = assembler.stop_sequence, "stop"
        if out.finish() and reason == "stop":
            reason = "tool_calls"
        prompt_tokens, cached_tokens = self._usage
        usage = Usage(prompt_tokens, self.generated, cached_tokens, self.reasoning_tokens)
        self._emit(Finished(reason, usage, stop_sequence))


class _Output:
    """Where text deltas go: through the reasoning splitter (reasoning out, answer on), then
    straight out or through the tool-call splitter."""

    def __init__(self, emit: Emit, splitter: ToolCallSplitter | None,
                 reasoning: ReasoningSplitter | None) -> None:
        self._emit = emit
        self._splitter = splitter
        self._reasoning = reasoning
        self.answer_text = ""  # the answer's text so far, for the redo check

    def send(self, delta: TextDelta | None) -> None:
        if delta is None:
            return
        if self._reasoning is None:
            self._answer(delta)
            return
        self._route(self._reasoning.feed(delta.text), delta)

    def _route(self, pieces: list[ReasoningOut], delta: TextDelta | None = None) -> None:
        for piece in pieces:
            if isinstance(piece, ReasoningDelta):
                self._emit(piece)
            elif isinstance(piece, ChannelCall):
                self._call(piece)
            elif delta is not None and pieces == [piece] and piece.text == delta.text:
                self._answer(delta)  # passed through whole: keep its logprobs
            else:
                self._answer(piece)

    def _answer(self, delta: TextDelta) -> None:
        self.answer_text += delta.text
        if self._splitter is None:
            self._emit(delta)
            return
        for event in self._splitter.feed(delta.text):
            self._emit(event)

    def _call(self, call: ChannelCall) -> None:
        if self._splitter is None:  # no tools declared: the call is what the model wrote
            self._answer(TextDelta(call.arguments))
            return
        for event in self._splitter.call(call.name, call.arguments):
            self._emit(event)

    @property
    def full(self) -> bool:
        return self._splitter is not None and self._splitter.full

    def restart(self) -> None:
        if self._splitter is None:
            raise RuntimeError("an answer can only restart while a splitter holds it")
        self._splitter.reset()
        self.answer_text = ""

    def finish(self) -> bool:
        """Flush what the splitters held; True if the answer made tool calls."""
        if self._reasoning is not None:
            self._route(self._reasoning.finish())
        if self._splitter is None:
            return False
        for event in self._splitter.finish():
            self._emit(event)
        return self._splitter.calls > 0
