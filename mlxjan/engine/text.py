"""Turning a stream of token bytes into safe text deltas, shared by every engine.

Two things are held back until they are certain: bytes of a UTF-8 character split across
tokens (never emitted broken), and text that may be the start of a stop string (never
emitted partially).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from mlxjan.types import TextDelta, TokenLogprob


class StopMatcher:
    """Finds the earliest stop string in streamed text, holding back possible prefixes."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """Text now safe to emit, and the stop string matched (if any) in what was fed."""
        buf = self._pending + text
        hit: tuple[int, str] | None = None
        for stop in self._stops:
            at = buf.find(stop)
            if at >= 0 and (hit is None or at < hit[0]):
                hit = (at, stop)
        if hit is not None:
            self._pending = ""
            return buf[: hit[0]], hit[1]
        hold = max((self._partial_len(buf, stop) for stop in self._stops), default=0)
        self._pending = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], None

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    @staticmethod
    def _partial_len(buf: str, stop: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of stop."""
        for k in range(min(len(stop) - 1, len(buf)), 0, -1):
            if buf.endswith(stop[:k]):
                return k
        return 0


@dataclass
class DeltaAssembler:
    """Feeds token bytes through UTF-8 decoding and stop matching, yielding TextDeltas."""

    stops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._matcher = StopMatcher(self.stops)
        self._logprobs: list[TokenLogprob] = []
        self.stop_sequence: str | None = None

    def push(self, piece: bytes, logprob: TokenLogprob | None = None) -> TextDelta | None:
        if logprob is not None:
            self._logprobs.append(logprob)
        text, self.stop_sequence = self._matcher.feed(self._decoder.decode(piece))
        return self._delta(text)

    def finish(self) -> TextDelta | None:
        """Whatever was held back, once generation ended without a stop string."""
        text, stop = self._matcher.feed(self._decoder.decode(b"", final=True))
        if stop is None:
            text += self._matcher.flush()
        self.stop_sequence = stop
        return self._delta(text, force=bool(self._logprobs))

    def _delta(self, text: str, force: bool = False) -> TextDelta | None:
        if not text and not force:
            return None
        delta = TextDelta(text, tuple(self._logprobs))
        self._logprobs = []
        return delta
