"""Reasoning formats by model family, and splitting a streamed output into reasoning and answer.

Three families: `<think>…</think>` (Qwen3, DeepSeek-R1, GLM 4.5+, MiniMax, Kimi), Magistral's
`[THINK]…[/THINK]`, and gpt-oss's harmony channels, where the output is a run of messages
`<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…` and a
tool call is a message to a recipient (`<|channel|>commentary to=functions.NAME … <|message|>
{args}<|call|>`). A think block is opened either by the model, as the very first thing it
writes, or by the chat template at the end of the generation prompt (DeepSeek-R1's
distills), so the output begins inside it; a `<think>` later in the answer is plain text.

Detection follows llama.cpp and mlx-lm: the template's markers (`<|channel|>` for harmony,
as llama.cpp's `common_chat_templates_apply_jinja`), then the vocabulary's (mlx-lm's
`_infer_thinking`: both markers are tokens). The splitter gives the same reasoning, answer
and calls whatever the chunking: it holds back only what may still become a marker (and the
whitespace that is stripped where a block starts or ends), never a marker's text.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Literal

from mlxjan.chat.markers import Rule, first_match
from mlxjan.types import ReasoningDelta, TextDelta


@dataclass(frozen=True)
class ReasoningFormat:
    name: str
    start: str  # what opens the reasoning
    end: str  # what closes it
    # What the server writes to end the reasoning when its budget is spent: the end marker,
    # with what the model writes after it, so the answer starts as the model would start it.
    close: str
    # The markers are control tokens: an engine renders them (special=True) or never sees them.
    special_tokens: bool
    # What opens the answer at once, skipping the reasoning, where the output needs a header
    # for it (harmony's final channel); "" where the answer needs none.
    direct_answer: str = ""


THINK = ReasoningFormat("think", "<think>", "</think>", "\n</think>\n\n", False)
# Magistral writes `[THINK]` and `[/THINK]` as control tokens (ids 34 and 35 in tekken),
# with no line breaks around them: an engine that hides control tokens sees no reasoning.
MISTRAL_THINK = ReasoningFormat("mistral_think", "[THINK]", "[/THINK]", "[/THINK]", True)

# harmony's control tokens, as openai-harmony's o200k_harmony encoding names them.
H_START = "<|start|>"
H_END = "<|end|>"
H_MESSAGE = "<|message|>"
H_CHANNEL = "<|channel|>"
H_CONSTRAIN = "<|constrain|>"
H_RETURN = "<|return|>"  # end of the answer; an engine may stop on it as end of generation
H_CALL = "<|call|>"  # end of a tool call; likewise

HARMONY = ReasoningFormat(
    "harmony", f"{H_CHANNEL}analysis{H_MESSAGE}", H_END,
    f"{H_END}{H_START}assistant{H_CHANNEL}final{H_MESSAGE}", True,
    f"{H_CHANNEL}final{H_MESSAGE}")


_Rule = Rule[ReasoningFormat]


# First match wins. Harmony first: its markers are control tokens no other family writes,
# while `<think>` is text any template may mention. `<|message|>` with `<|channel|>` keeps a
# stray mention of one of them from matching.
TEMPLATE_RULES: tuple[_Rule, ...] = (
    _Rule((H_CHANNEL, H_MESSAGE), HARMONY),
    _Rule(("[THINK]",), MISTRAL_THINK),
    _Rule(("[/THINK]",), MISTRAL_THINK),
    _Rule(("<think>",), THINK),
    _Rule(("</think>",), THINK),
)
VOCAB_RULES: tuple[_Rule, ...] = (
    _Rule((H_CHANNEL, H_MESSAGE, H_START, H_END), HARMONY),
    _Rule(("[THINK]", "[/THINK]"), MISTRAL_THINK),
    _Rule(("<think>", "</think>"), THINK),
)
FORMATS: dict[str, ReasoningFormat] = {f.name: f for f in (THINK, MISTRAL_THINK, HARMONY)}


def detect_reasoning(chat_template: str | None,
                     vocab: Container[str] | None = None) -> ReasoningFormat | None:
    """The family a model's template (or, failing that, its vocabulary of token texts)
    teaches; None: not a reasoning model."""
    return first_match(TEMPLATE_RULES, VOCAB_RULES, chat_template, vocab)


def opened_in_prompt(fmt: ReasoningFormat, prompt: str) -> bool:
    """Whether the rendered prompt leaves a reasoning block open at its end, so the output
    begins inside reasoning.

    Only a start marker at the very end counts (whitespace after it allowed): one earlier in
    the prompt may be a user quoting it, and Qwen3's `<think>\\n\\n</think>\\n\\n` (thinking
    off) ends closed. A harmony prompt ends with `<|start|>assistant`, so False unless the
    server itself opened the analysis channel.
    """
    return prompt.rstrip().endswith(fmt.start)


@dataclass(frozen=True)
class ChannelCall:
    """A harmony tool call, whole: its function and its arguments as written."""

    name: str  # "get_weather", from `to=functions.get_weather`
    arguments: str  # the JSON text as written


ReasoningOut = ReasoningDelta | TextDelta | ChannelCall
Kind = Literal["reasoning", "answer", "call"]
Mode = Literal["start", "header", "body"]

# A body ends at one of these (consumed)...
_CLOSERS = (H_END, H_RETURN, H_CALL)
# ...or where the next message's header begins (kept: it is that header's). gpt-oss
# sometimes skips `<|end|><|start|>assistant` before `<|channel|>final`.
_OPENERS = (H_START, H_CHANNEL)
# A header of the first message may also begin with its recipient (the prompt ended with
# `<|start|>assistant`): ` to=functions.x<|channel|>commentary json<|message|>`.
_HEADER_STARTS = (H_START, H_CHANNEL, "to=")
# A header longer than this is not one: its message is read from after the channel name.
_HEADER_CAP = 256
_CHANNEL = re.compile(re.escape(H_CHANNEL) + r"\s*(\w+)")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_ROLE = re.compile(re.escape(H_START) + r"\s*(assistant\b)?")
# What may follow the channel name in a header: a recipient, a constrained content type.
_TAIL = re.compile(r"(\s*to=[^\s<]+|\s*" + re.escape(H_CONSTRAIN) + r"\s*\w+)*")
# Recipients that are the model's built-in tools (python, browser.*, container.*), not
# functions the request declared: their messages are part of its reasoning.
_BUILTIN = re.compile(r"(python|browser\..*|container\..*)")


class ReasoningSplitter:
    """Output in, reasoning and answer (and harmony's tool calls) out, whatever the
    chunking. Strips the whitespace at each end of a reasoning block and at the start of the
    answer; keeps the rest as written."""

    def __init__(self, fmt: ReasoningFormat, *, opened: bool) -> None:
        self._fmt = fmt
        self._channels = fmt.name == HARMONY.name
        self._buf = ""
        self._mode: Mode = "header" if self._channels else "start"
        self._kind: Kind = "answer"
        self._recipient = ""  # the function a call body is for
        self._lead = True  # at a body's start: its leading whitespace is dropped
        self._sent_in_block = False
        self._last: dict[Kind, str] = {}  # the last character sent of each stream
        self._answered = False
        if opened:
            self._open("reasoning")

    @property
    def reasoning(self) -> bool:
        """Inside a reasoning block now (what a reasoning budget counts)."""
        return self._mode == "body" and self._kind == "reasoning"

    @property
    def answering(self) -> bool:
        """The reasoning is over, or it was decided that there is none: what follows is the
        answer. Harmony: from its `final` message (or a message with no header) on; the
        commentary channel's preambles and calls may still be followed by analysis."""
        return self._answered

    def feed(self, text: str) -> list[ReasoningOut]:
        self._buf += text
        out: list[ReasoningOut] = []
        while True:
            before = (self._mode, self._kind, len(self._buf))
            out.extend(self._step())
            if (self._mode, self._kind, len(self._buf)) == before:
                return out

    def finish(self) -> list[ReasoningOut]:
        """Flush what is held at the end of the output: an unterminated reasoning block is
        reasoning, a call without its end marker is still a call, a partial marker is the
        text it was."""
        out = self.feed("")
        rest, self._buf = self._buf, ""
        if self._mode == "start":
            return out + self._send("answer", rest.lstrip())
        if self._mode == "header":
            head = rest.lstrip()
            if not head.startswith(_HEADER_STARTS):
                return out + self._send("answer", head)  # no header: text, as written
            # A header cut off: its message is whatever follows the channel name.
            at = _recovered_body(head)
            self._start_body(head[:at], head[at:])
            rest, self._buf = self._buf, ""
        if self._lead:
            rest = rest.lstrip()
        if self._kind == "call":
            return [*out, ChannelCall(self._recipient, rest)]
        if self._kind == "reasoning":
            rest = rest.rstrip()
        return out + self._send(self._kind, rest)

    # --- the steps -------------------------------------------------------------------------

    def _step(self) -> list[ReasoningOut]:
        if self._mode == "start":
            return self._classify_start()
        if self._mode == "header":
            return self._read_header()
        return self._scan_body()

    def _classify_start(self) -> list[ReasoningOut]:
        """Tags: reasoning only if the output opens with the start marker."""
        head = self._buf.lstrip()
        start = self._fmt.start
        if head.startswith(start):  # the marker itself already counts as reasoning
            self._buf = head[len(start):]
            self._open("reasoning")
        elif not head or start.startswith(head):
            return []  # not enough seen yet
        else:
            self._buf = head
            self._open("answer")
        return []

    def _read_header(self) -> list[ReasoningOut]:
        """Harmony: a message's header, up to `<|message|>`; never sent."""
        head = self._buf.lstrip()
        if not head:
            return []
        if not head.startswith(_HEADER_STARTS):
            if any(opener.startswith(head) for opener in _HEADER_STARTS):
                return []  # maybe a header still
            self._buf = head  # a message with no header is the answer, as written
            self._open("answer")
            return []
        at, marker = _first(head, (H_MESSAGE, *_CLOSERS))
        if marker == H_MESSAGE and at <= _HEADER_CAP:
            self._start_body(head[:at], head[at + len(marker):])
        elif marker is not None or len(head) > _HEADER_CAP + len(H_MESSAGE):
            # Malformed (`<|channel|>commentary Hello<|end|>`) or too long: as harmony's
            # non-strict parser does, the message is what follows the channel name.
            at = _recovered_body(head)
            self._start_body(head[:at], head[at:])
        else:
            self._buf = head
        return []

    def _scan_body(self) -> list[ReasoningOut]:
        if self._lead:
            self._buf = self._buf.lstrip()
            if not self._buf:
                return []
            self._lead = False
        ends = self._ends()
        at, marker = _first(self._buf, ends)
        if marker is not None:
            text = self._buf[:at]
            keep = marker in _OPENERS  # the next header's: left for it
            self._buf = self._buf[at:] if keep else self._buf[at + len(marker):]
            return self._close_body(text)
        if self._kind == "call":
            return []  # held whole, until its end
        cut = len(self._buf) - max((_partial_suffix(self._buf, m) for m in ends), default=0)
        text = self._buf[:cut]
        if self._kind == "reasoning":
            # Trailing whitespace waits: dropped if the block ends next, sent if text follows.
            text = text.rstrip()
        self._buf = self._buf[len(text):]
        return self._send(self._kind, text)

    # --- blocks ----------------------------------------------------------------------------

    def _ends(self) -> Sequence[str]:
        """What ends the current body."""
        if self._channels:
            return (*_CLOSERS, *_OPENERS)
        # In the answer too: a stray end marker there (a small model imitating the one the
        # server wrote at its budget) is dropped, never shown as the answer's text.
        return (self._fmt.end,)

    def _open(self, kind: Kind, recipient: str = "", final: bool = True) -> None:
        self._mode, self._kind, self._recipient = "body", kind, recipient
        self._lead, self._sent_in_block = True, False
        if kind == "answer" and final:
            self._answered = True

    def _close_body(self, text: str) -> list[ReasoningOut]:
        if self._lead:
            text = text.lstrip()
        out: list[ReasoningOut]
        if self._kind == "call":
            out = [ChannelCall(self._recipient, text)]
        else:
            out = self._send(self._kind, text.rstrip() if self._kind == "reasoning" else text)
        if self._channels:
            self._mode = "header"
        else:
            self._open("answer")  # tags: after the end marker, everything is answer
        return out

    def _start_body(self, header: str, body: str) -> None:
        """Harmony: begin the body of a message whose header is `header`."""
        channel = _CHANNEL.search(header)
        name = channel.group(1) if channel else "final"
        recipient = _RECIPIENT.search(header)
        self._buf = body
        if recipient is not None:
            function = _function(recipient.group(1))
            if function is not None:
                self._open("call", function)
                return
            self._open("reasoning")  # a built-in tool's call is the model's own business
        elif name == "analysis":
            self._open("reasoning")
        else:
            # `final`, or a `commentary` preamble (answer text, but analysis may follow).
            self._open("answer", final=name != "commentary")

    def _send(self, kind: Kind, text: str) -> list[ReasoningOut]:
        if not text:
            return []
        if not self._sent_in_block:
            self._sent_in_block = True
            last = self._last.get(kind)
            if last is not None and not last.isspace():
                text = "\n\n" + text  # a second block of the same stream (harmony)
        self._last[kind] = text[-1]
        return [ReasoningDelta(text)] if kind == "reasoning" else [TextDelta(text)]


def _recovered_body(head: str) -> int:
    """Where the message of a malformed header begins: after its channel name (and the
    recipient or content type after it), else after its `<|start|>assistant` (a bare `to=`
    with no channel is text, not a header)."""
    channel = _CHANNEL.search(head)
    if channel is not None:
        tail = _TAIL.match(head, channel.end())
        return tail.end() if tail is not None else channel.end()
    start = _ROLE.match(head)
    return start.end() if start is not None else 0


def _function(recipient: str) -> str | None:
    """The declared function a harmony recipient names (`functions.get_weather`; some
    outputs drop the namespace), or None for one of the model's built-in tools."""
    if recipient.startswith("functions."):
        return recipient[len("functions."):]
    return None if _BUILTIN.fullmatch(recipient) else recipient


def _first(text: str, markers: Sequence[str]) -> tuple[int, str | None]:
    """The earliest of `markers` in `text` and where it is; (-1, None) if none."""
    best, found = -1, None
    for marker in markers:
        at = text.find(marker)
        if at >= 0 and (found is None or at < best):
            best, found = at, marker
    return best, found


def _partial_suffix(buf: str, marker: str) -> int:
    """How long a start of `marker` ends `buf` (0: none)."""
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0
