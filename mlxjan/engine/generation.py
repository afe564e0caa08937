"""The decode loop every engine shares: tokens in, Started/TextDelta/Finished events out.

Engines supply an iterator of sampled tokens; this loop owns the stop rules (end of
generation, stop strings, max tokens, cancellation) so they behave the same everywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from mlxjan.chat.tool_stream import ToolCallSplitter
from mlxjan.engine.base import (
    Finished,
    FinishReason,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    Usage,
)
from mlxjan.engine.text import DeltaAssembler
from mlxjan.engine.worker import Emit


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
    assembler = DeltaAssembler(sampling.stop)
    out = _Output(emit, tool_calls)
    generated = 0
    reason: FinishReason = "length"
    for token in tokens:
        if cancelled.is_set():
            return
        if token.end_of_generation:
            reason = "stop"
            break
        if token.restart:
            assembler, generated = DeltaAssembler(sampling.stop), 0
            out.restart()
            continue
        generated += 1
        out.send(assembler.push(token.piece, token.logprob))
        if assembler.stop_sequence is not None or out.full:
            reason = "stop"  # a full splitter: the answer has made all the calls it may
            break
        if generated >= max_new_tokens:
            break
    if cancelled.is_set():
        return
    stop_sequence = assembler.stop_sequence
    if stop_sequence is None and not out.full:
        out.send(assembler.finish())
        if assembler.stop_sequence is not None:
            stop_sequence, reason = assembler.stop_sequence, "stop"
    if out.finish() and reason == "stop":
        reason = "tool_calls"
    emit(Finished(reason, Usage(prompt_tokens, generated, cached_tokens), stop_sequence))


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
