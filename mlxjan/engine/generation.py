"""The decode loop every engine shares: tokens in, Started/TextDelta/Finished events out.

Engines supply an iterator of sampled tokens; this loop owns the stop rules (end of
generation, stop strings, max tokens, cancellation) so they behave the same everywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from mlxjan.chat.tool_calls import JsonSchema, ToolFormat, call_attempt
from mlxjan.chat.tool_stream import ToolCallSplitter
from mlxjan.engine.text import DeltaAssembler
from mlxjan.engine.thread import Emit
from mlxjan.errors import ContextLengthExceededError
from mlxjan.types import (
    Finished,
    FinishReason,
    GenerationRequest,
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
    # The engine discarded everything sampled so far and starts the answer again
    # (constrained); only valid while nothing has been sent to the client.
    restart: bool = False


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
    steps several answers together); `finish` emits the one Finished event."""

    def __init__(self, sampling: SamplingParams, *, prompt_tokens: int, cached_tokens: int,
                 max_new_tokens: int, emit: Emit,
                 tool_calls: ToolCallSplitter | None = None) -> None:
        self._sampling = sampling
        self._assembler = DeltaAssembler(sampling.stop)
        self._out = _Output(emit, tool_calls)
        self._emit = emit
        self._usage = (prompt_tokens, cached_tokens)
        self._max_new_tokens = max_new_tokens
        self.generated = 0
        self._reason: FinishReason = "length"

    def push(self, token: SampledToken) -> bool:
        """Take one token; True once the answer is complete (call `finish` then)."""
        if token.end_of_generation:
            self._reason = "stop"
            return True
        if token.restart:
            self._assembler, self.generated = DeltaAssembler(self._sampling.stop), 0
            self._out.restart()
            return False
        self.generated += 1
        self._out.send(self._assembler.push(token.piece, token.logprob))
        if self._assembler.stop_sequence is not None or self._out.full:
            self._reason = "stop"  # a full splitter: the answer has made all the calls it may
            return True
        return self.generated >= self._max_new_tokens

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
        self._emit(Finished(reason, Usage(prompt_tokens, self.generated, cached_tokens),
                            stop_sequence))


class _Output:
    """Where text deltas go: straight out, or through the tool-call splitter."""

    def __init__(self, emit: Emit, splitter: ToolCallSplitter | None) -> None:
        self._emit = emit
        self._splitter = splitter

    def send(self, delta: TextDelta | None) -> None:
        if delta is None:
            return
        if self._splitter is None:
            self._emit(delta)
            return
        for event in self._splitter.feed(delta.text):
            self._emit(event)

    @property
    def full(self) -> bool:
        return self._splitter is not None and self._splitter.full

    def restart(self) -> None:
        if self._splitter is None:
            raise RuntimeError("an answer can only restart while a splitter holds it")
        self._splitter.reset()

    def finish(self) -> bool:
        """Flush what the splitter held; True if the answer made tool calls."""
        if self._splitter is None:
            return False
        for event in self._splitter.finish():
            self._emit(event)
        return self._splitter.calls > 0
