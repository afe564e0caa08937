"""StopMatcher and DeltaAssembler: never a partial stop string, never a broken character."""

from __future__ import annotations

import pytest

from mlxjan.engine.text import DeltaAssembler, StopMatcher
from mlxjan.types import TextDelta, TokenLogprob


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], str | None]:
    """Feed pieces until a stop matches; the emitted chunks and the stop (if any)."""
    out: list[str] = []
    for piece in pieces:
        text, stop = matcher.feed(piece)
        out.append(text)
        if stop is not None:
            return out, stop
    out.append(matcher.flush())
    return out, None


def lp(token: str, value: float = -0.5) -> TokenLogprob:
    return TokenLogprob(token=token, logprob=value, bytes=tuple(token.encode()))


def push_all(assembler: DeltaAssembler, pieces: list[bytes]) -> list[TextDelta]:
    deltas: list[TextDelta] = []
    for piece in pieces:
        delta = assembler.push(piece)
        if delta is not None:
            deltas.append(delta)
        if assembler.stop_sequence is not None:
            return deltas
    tail = assembler.finish()
    if tail is not None:
        deltas.append(tail)
    return deltas


def bytewise(text: str) -> list[bytes]:
    return [bytes([b]) for b in text.encode("utf-8")]


# --- StopMatcher -----------------------------------------------------------------------------


def test_no_stops_passes_text_straight_through() -> None:
    matcher = StopMatcher(())
    assert matcher.feed("hello") == ("hello", None)
    assert matcher.feed(" <|im") == (" <|im", None)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    matcher = StopMatcher(("",))
    assert matcher.feed("abc") == ("abc", None)


def test_stop_split_across_feeds_is_never_partially_emitted() -> None:
    stop = "<|im_end|>"
    matcher = StopMatcher((stop,))
    emitted: list[str] = []
    result: str | None = None
    for piece in ["Hello", " wor", "ld<", "|im", "_e", "nd", "|>", "after"]:
        text, result = matcher.feed(piece)
        emitted.append(text)
        # No prefix of the stop (longer than nothing) ever leaks out.
        assert "<" not in text
        if result is not None:
            break
    assert result == stop
    assert "".join(emitted) == "Hello world"


def test_text_before_stop_in_the_same_feed_is_emitted() -> None:
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("abcSTOPdef") == ("abc", "STOP")


def test_held_prefix_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    matcher = StopMatcher(("</end>",))
    assert matcher.feed("a </e") == ("a ", None)
    # "</ex" can no longer become "</end>": everything is released.
    assert matcher.feed("x") == ("</ex", None)
    assert matcher.flush() == ""


def test_held_prefix_is_flushed_at_the_end() -> None:
    matcher = StopMatcher(("</end>",))
    assert matcher.feed("tail </en") == ("tail ", None)
    assert matcher.flush() == "</en"
    assert matcher.flush() == ""


def test_repeated_prefix_character_holds_only_what_could_still_match() -> None:
    matcher = StopMatcher(("ab",))
    assert matcher.feed("a") == ("", None)
    assert matcher.feed("a") == ("a", None)
    assert matcher.feed("b") == ("", "ab")


@pytest.mark.parametrize(
    ("stops", "pieces", "want_text", "want_stop"),
    [
        # Both stops in one feed: the one that starts first wins, whatever the list order.
        (("world", "lo"), ["hello world"], "hel", "lo"),
        (("lo", "world"), ["hello world"], "hel", "lo"),
        # A longer stop pending as a prefix loses to a shorter one completing inside it.
        (("xyz", "yq"), ["ax", "y", "q"], "ax", "yq"),
        # Same start: the longer one is still found from that position.
        (("abcd", "cd"), ["ab", "cd"], "", "abcd"),
    ],
)
def test_earliest_of_several_stops_wins(stops: tuple[str, ...], pieces: list[str],
                                        want_text: str, want_stop: str) -> None:
    chunks, stop = feed_all(StopMatcher(stops), pieces)
    assert stop == want_stop
    assert "".join(chunks) == want_text


# --- DeltaAssembler --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["café", "日本語です", "emoji 😀 and 👍🏽!", "é"])
def test_multibyte_characters_split_byte_by_byte_are_never_broken(text: str) -> None:
    assembler = DeltaAssembler()
    deltas = push_all(assembler, bytewise(text))
    for delta in deltas:
        assert "\ufffd" not in delta.text
        assert delta.text  # no empty deltas without logprobs
    assert "".join(d.text for d in deltas) == text
    assert assembler.stop_sequence is None


def test_multibyte_split_across_uneven_pieces() -> None:
    raw = "日本".encode()  # 6 bytes: e6 97 a5 e6 9c ac
    assembler = DeltaAssembler()
    assert assembler.push(raw[:2]) is None
    first = assembler.push(raw[2:4])
    assert first is not None and first.text == "日"
    second = assembler.push(raw[4:])
    assert second is not None and second.text == "本"


def test_multibyte_stop_string_fed_byte_by_byte() -> None:
    assembler = DeltaAssembler(stops=("日本",))
    deltas = push_all(assembler, bytewise("今日は日本"))
    # "今" can be emitted; "日" alone might begin the stop, is released by "は", and the
    # final "日本" is the stop itself.
    assert "".join(d.text for d in deltas) == "今日は"
    assert assembler.stop_sequence == "日本"
    assert all("\ufffd" not in d.text for d in deltas)


def test_stop_across_byte_pieces_is_never_partially_emitted() -> None:
    assembler = DeltaAssembler(stops=("<|im_end|>",))
    deltas = push_all(assembler, [b"Hi", b" there", b"<|", b"im_", b"end", b"|>", b"junk"])
    assert [d.text for d in deltas] == ["Hi", " there"]
    assert assembler.stop_sequence == "<|im_end|>"


def test_finish_flushes_held_stop_prefix() -> None:
    assembler = DeltaAssembler(stops=("</s>",))
    first = assembler.push(b"done </")
    assert first is not None and first.text == "done "
    tail = assembler.finish()
    assert tail is not None and tail.text == "</"
    assert assembler.stop_sequence is None


def test_finish_with_nothing_held_returns_none() -> None:
    assembler = DeltaAssembler(stops=("</s>",))
    delta = assembler.push(b"plain")
    assert delta is not None and delta.text == "plain"
    assert assembler.finish() is None


def test_finish_replaces_a_truncated_character_rather_than_dropping_it() -> None:
    assembler = DeltaAssembler()
    assert assembler.push("é".encode()[:1]) is None
    tail = assembler.finish()
    assert tail is not None and tail.text == "\ufffd"


def test_logprobs_attach_to_the_delta_that_carries_their_text() -> None:
    assembler = DeltaAssembler()
    first = assembler.push(b"Hel", lp("Hel", -0.1))
    assert first is not None
    assert first.text == "Hel"
    assert [x.token for x in first.logprobs] == ["Hel"]
    second = assembler.push(b"lo", lp("lo", -0.2))
    assert second is not None
    assert [(x.token, x.logprob) for x in second.logprobs] == [("lo", -0.2)]


def test_logprobs_of_held_tokens_wait_for_the_next_delta() -> None:
    raw = "é".encode()
    assembler = DeltaAssembler()
    assert assembler.push(raw[:1], lp("<0xC3>")) is None
    delta = assembler.push(raw[1:], lp("<0xA9>"))
    assert delta is not None
    assert delta.text == "é"
    assert [x.token for x in delta.logprobs] == ["<0xC3>", "<0xA9>"]


def test_finish_emits_pending_logprobs_even_without_text() -> None:
    assembler = DeltaAssembler(stops=("STOP",))
    assembler.push(b"ok", lp("ok"))
    # A token whose text is held as a possible stop prefix...
    assert assembler.push(b"ST", lp("ST")) is None
    tail = assembler.finish()
    assert tail is not None
    assert tail.text == "ST"
    assert [x.token for x in tail.logprobs] == ["ST"]
    # ...and a bare finish with only logprobs pending still reports them.
    other = DeltaAssembler()
    assert other.push(b"\xe6", lp("<0xE6>")) is None
    empty_tail = other.finish()
    assert empty_tail is not None
    assert [x.token for x in empty_tail.logprobs] == ["<0xE6>"]
