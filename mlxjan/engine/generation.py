"""The decode loop every engine shares: tokens in, Started/TextDelta/Finished events out.

Engines supply an iterator of sampled tokens; this loop owns the stop rules (end of
generation, stop strings, max tokens, cancellation) so they behave the same everywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from mlxjan.engine.base import Finished, FinishReason, SamplingParams, TokenLogprob, Usage
from mlxjan.engine.text import DeltaAssembler
from mlxjan.engine.worker import Emit


@dataclass(frozen=True)
class SampledToken:
    piece: bytes
    end_of_generation: bool = False
    logprob: TokenLogprob | None = None


def decode_loop(
    tokens: Iterator[SampledToken],
    sampling: SamplingParams,
    *,
    prompt_tokens: int,
    cached_tokens: int,
    max_new_tokens: int,
    emit: Emit,
    cancelled: threading.Event,
) -> None:
    """Drain `tokens` into events until a stop rule fires; emits exactly one Finished."""
    assembler = DeltaAssembler(sampling.stop)
    generated = 0
    reason: FinishReason = "length"
    for token in tokens:
        if cancelled.is_set():
            return
        if token.end_of_generation:
            reason = "stop"
            break
        generated += 1
        delta = assembler.push(token.piece, token.logprob)
        if delta is not None:
            emit(delta)
        if assembler.stop_sequence is not None:
            reason = "stop"
            break
        if generated >= max_new_tokens:
            break
    if cancelled.is_set():
        return
    stop_sequence = assembler.stop_sequence
    if stop_sequence is None:
        tail = assembler.finish()
        if tail is not None:
            emit(tail)
        if assembler.stop_sequence is not None:
            stop_sequence, reason = assembler.stop_sequence, "stop"
    usage = Usage(prompt_tokens, generated, cached_tokens)
    emit(Finished(reason, usage, stop_sequence))
