"""The llama.cpp batch's scheduling, without a model: which slot a prompt takes, and how
each step's batch is cut (prompt chunks on a fixed grid, decoding answers every step)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import pytest

from mlxjan.engine.generation import Decoder
from mlxjan.engine.llamacpp.batch import Answer, Batch, Slot
from mlxjan.engine.llamacpp.decode import CHUNK, LONE_PROMPT_BATCH, Runtime
from mlxjan.engine.prompt_cache import PromptCache
from mlxjan.engine.thread import Sink
from mlxjan.types import SamplingParams


def _answer(prompt: list[int], pending: list[int]) -> Answer:
    sink = cast(Sink, SimpleNamespace(cancelled=threading.Event(), close=lambda: None))
    return Answer(prompt, SamplingParams(), None, None, sink, pending=pending)


@pytest.fixture
def batch() -> Iterator[Batch]:
    def no_decoder(answer: Answer, cached: int) -> Decoder:
        raise AssertionError("not admitted in these tests")

    made = Batch(cast(Runtime, SimpleNamespace(slots=3)), PromptCache(0), no_decoder)
    yield made
    made.close()


def _busy(slot: Slot, held: int, pending: int, used: int, generated: int = 0) -> None:
    slot.tokens = list(range(held))
    slot.answer = _answer(list(range(held + pending - generated)), list(range(pending)))
    slot.used = used


def test_prompt_chunks_end_on_the_grid_each_in_its_own_decode(batch: Batch) -> None:
    decoding, first, second = batch.slots
    _busy(decoding, 40, 1, used=1, generated=1)
    _busy(first, 100, 2000, used=2)  # cached 100: its first chunk runs to CHUNK
    _busy(second, 0, 30, used=3)
    assert batch._plan() == [[(decoding, 1, True)], [(first, CHUNK - 100, False)],
                             [(second, 30, True)]]


def test_one_prompt_chunk_per_step_when_it_fills_the_step(batch: Batch) -> None:
    decoding, first, second = batch.slots
    _busy(decoding, 40, 1, used=1, generated=1)
    _busy(first, 0, 3 * CHUNK, used=2)
    _busy(second, 0, 10, used=3)
    assert batch._plan() == [[(decoding, 1, True)], [(first, CHUNK, False)]]


def test_with_none_decoding_a_prompt_takes_a_whole_batch_from_the_grid(batch: Batch) -> None:
    first, second, _ = batch.slots
    _busy(first, 100, 5000, used=1)  # off the grid: first up to the next multiple of CHUNK
    _busy(second, 0, 10, used=2)
    assert batch._plan() == [[(first, CHUNK - 100, False)], [(second, 10, True)]]
    _busy(first, CHUNK, 5000, used=1)  # on the grid: as much as one decode takes
    assert batch._plan() == [[(first, LONE_PROMPT_BATCH, False)]]
    _busy(first, CHUNK, 30, used=1)
    assert batch._plan() == [[(first, 30, True)], [(second, 10, True)]]


def test_a_steps_answers_go_in_ascending_sequence_order(batch: Batch) -> None:
    # llama.cpp computes one ascending run of sequence ids at a time: 2,0,1 would cost two.
    a, b, c = batch.slots
    for slot, used, advanced in ((a, 1, 5), (b, 2, 6), (c, 3, 4)):  # c's turn comes first
        _busy(slot, 40, 1, used=used, generated=1)
        slot.advanced = advanced
    assert batch._plan() == [[(a, 1, True), (b, 1, True), (c, 1, True)]]


def test_a_prompt_s_last_token_is_not_mixed_with_decoding_answers(batch: Batch) -> None:
    decoding, prompt, _ = batch.slots
    _busy(decoding, 40, 1, used=1, generated=1)
    _busy(prompt, CHUNK, 1, used=2)
    assert batch._plan() == [[(decoding, 1, True)], [(prompt, 1, True)]]


def test_a_prompt_takes_the_slot_with_its_prefix_else_the_least_recently_used(
        batch: Batch) -> None:
    a, b, c = batch.slots
    a.tokens, a.used = list(range(100)), 3
    b.tokens, b.used = [7] * 100, 1
    c.tokens, c.used = [8] * 100, 2
    assert batch._pick([*range(90), 5]) == (a, 90)
    assert batch._pick([9] * 50) == (b, 0)  # shares nothing: the oldest slot goes


def test_a_long_unrelated_prefix_is_kept_while_a_cheaper_slot_is_free(batch: Batch) -> None:
    long, short, empty = batch.slots
    long.tokens, long.used = [1] * 20 + [2] * 1000, 1  # a template opening, then its own
    short.tokens, short.used = [1] * 20 + [3] * 10, 2
    empty.used = 3
    assert batch._pick([1] * 20 + [4] * 50) == (short, 20)  # reuses the opening cheaply
    short.answer = _answer([0], [0])
    assert batch._pick([1] * 20 + [4] * 50) == (empty, 0)


def test_a_busy_slot_sharing_a_long_prefix_is_the_source_to_copy(batch: Batch) -> None:
    """An editor's keystrokes: the answer to the last one still holds the file's prefix."""
    busy, other, _ = batch.slots
    _busy(busy, 2000, 1, used=1, generated=1)
    _busy(other, 300, 1, used=2, generated=1)
    prompt = [*range(1990), 7, 7, 7]
    assert batch.busy_sharing(prompt, 1000) is busy
    assert batch.busy_sharing(prompt, 1991) is None  # shares too little to pay
    assert batch.busy_sharing([9, *range(1, 2000)], 256) is None  # shares nothing
