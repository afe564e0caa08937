"""decode_loop: the stop rules every engine shares, and exactly one Finished."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from mlxjan.engine.generation import SampledToken, decode_loop
from mlxjan.types import Event, Finished, SamplingParams, TextDelta, TokenLogprob


def tokens(*pieces: str, eog: bool = False) -> list[SampledToken]:
    out = [SampledToken(p.encode()) for p in pieces]
    if eog:
        out.append(SampledToken(b"", end_of_generation=True))
    return out


def run(stream: Iterable[SampledToken], *, stop: tuple[str, ...] = (), max_new_tokens: int = 100,
        cancelled: threading.Event | None = None, prompt_tokens: int = 7,
        cached_tokens: int = 3) -> list[Event]:
    events: list[Event] = []
    decode_loop(iter(stream), SamplingParams(stop=stop), prompt_tokens=prompt_tokens,
                cached_tokens=cached_tokens, max_new_tokens=max_new_tokens, emit=events.append,
                cancelled=cancelled or threading.Event())
    return events


def split(events: list[Event]) -> tuple[str, Finished]:
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1, events
    assert events[-1] is finished[0], "Finished must be the last event"
    assert all(isinstance(e, TextDelta) for e in events[:-1])
    return "".join(e.text for e in events if isinstance(e, TextDelta)), finished[0]


def test_end_of_generation_finishes_with_stop() -> None:
    text, finished = split(run(tokens("Hello", ",", " world", eog=True)))
    assert text == "Hello, world"
    assert finished.reason == "stop"
    assert finished.stop_sequence is None
    assert finished.usage.prompt_tokens == 7
    assert finished.usage.cached_tokens == 3
    # The end-of-generation token itself is not counted as generated text.
    assert finished.usage.completion_tokens == 3


def test_tokens_after_end_of_generation_are_not_read() -> None:
    consumed: list[bytes] = []

    def stream() -> Iterator[SampledToken]:
        for token in tokens("a", eog=True) + tokens("never"):
            consumed.append(token.piece)
            yield token

    text, finished = split(run(stream()))
    assert text == "a"
    assert finished.reason == "stop"
    assert consumed == [b"a", b""]


def test_max_new_tokens_finishes_with_length() -> None:
    text, finished = split(run(tokens(*"abcdefghij"), max_new_tokens=4))
    assert text == "abcd"
    assert finished.reason == "length"
    assert finished.usage.completion_tokens == 4
    assert finished.usage.total_tokens == 7 + 4


def test_running_out_of_tokens_finishes_with_length() -> None:
    text, finished = split(run(tokens("x", "y"), max_new_tokens=10))
    assert text == "xy"
    assert finished.reason == "length"
    assert finished.usage.completion_tokens == 2


def test_stop_string_finishes_with_stop_and_keeps_only_the_text_before_it() -> None:
    events = run(tokens("The answer", " is 4", ".\n", "##", "# Next", " part"),
                 stop=("###",))
    text, finished = split(events)
    assert text == "The answer is 4.\n"
    assert finished.reason == "stop"
    assert finished.stop_sequence == "###"
    # Tokens up to and including the one completing the stop were generated.
    assert finished.usage.completion_tokens == 5
    assert not any("#" in e.text for e in events if isinstance(e, TextDelta))


def test_stop_string_inside_one_token() -> None:
    text, finished = split(run(tokens("okEND trailing", "more"), stop=("END",)))
    assert text == "ok"
    assert finished.reason == "stop"
    assert finished.stop_sequence == "END"
    assert finished.usage.completion_tokens == 1


def test_stop_string_wins_over_max_tokens_on_the_same_token() -> None:
    text, finished = split(run(tokens("a", "b", "STOP"), stop=("STOP",), max_new_tokens=3))
    assert text == "ab"
    assert finished.reason == "stop"
    assert finished.stop_sequence == "STOP"


def test_held_stop_prefix_is_flushed_when_generation_ends() -> None:
    text, finished = split(run(tokens("x <", "/"), stop=("</s>",), max_new_tokens=2))
    assert text == "x </"
    assert finished.reason == "length"
    assert finished.stop_sequence is None

    text, finished = split(run(tokens("y <", eog=True), stop=("</s>",)))
    assert text == "y <"
    assert finished.reason == "stop"
    assert finished.stop_sequence is None


def test_character_split_across_tokens_is_emitted_whole() -> None:
    raw = "日".encode()
    stream = [SampledToken(raw[:1]), SampledToken(raw[1:2]), SampledToken(raw[2:])]
    events = run(stream, max_new_tokens=3)
    text, finished = split(events)
    assert text == "日"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["日"]
    assert finished.usage.completion_tokens == 3


def test_logprobs_travel_with_deltas() -> None:
    stream = [SampledToken(b"hi", logprob=TokenLogprob("hi", -0.25, tuple(b"hi"))),
              SampledToken(b"", end_of_generation=True)]
    events = run(stream)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert [lp.logprob for d in deltas for lp in d.logprobs] == [-0.25]


def test_cancelled_before_start_emits_nothing() -> None:
    cancelled = threading.Event()
    cancelled.set()
    assert run(tokens("a", "b", eog=True), cancelled=cancelled) == []


def test_cancelled_mid_stream_emits_no_finished() -> None:
    cancelled = threading.Event()

    def stream() -> Iterator[SampledToken]:
        yield SampledToken(b"one")
        yield SampledToken(b"two")
        cancelled.set()  # the client went away while the next token was sampled
        yield SampledToken(b"three")
        yield SampledToken(b"", end_of_generation=True)

    events = run(stream(), cancelled=cancelled)
    assert not any(isinstance(e, Finished) for e in events)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["one", "two"]


def test_cancelled_on_the_last_token_emits_no_finished() -> None:
    cancelled = threading.Event()

    def stream() -> Iterator[SampledToken]:
        yield SampledToken(b"only")
        cancelled.set()

    events = run(stream(), cancelled=cancelled, max_new_tokens=5)
    assert not any(isinstance(e, Finished) for e in events)


def test_exactly_one_finished_in_every_ending() -> None:
    endings: list[list[Event]] = [
        run(tokens("a", eog=True)),
        run(tokens("a", "b", "c"), max_new_tokens=2),
        run(tokens("aSTOPb"), stop=("STOP",)),
        run([]),
    ]
    for events in endings:
        assert sum(isinstance(e, Finished) for e in events) == 1
        assert isinstance(events[-1], Finished)
