"""Anthropic `thinking`: request options, signed thinking blocks out (whole and streamed),
and thinking blocks sent back in history (trusted only with this server's signature)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlxjan.errors import InvalidRequestError
from mlxjan.server.anthropic import schemas as s
from mlxjan.server.anthropic.convert import (
    ThinkingOutput,
    message,
    thinking_output,
    to_generation_request,
)
from mlxjan.server.anthropic.stream import MessageStream
from mlxjan.server.signing import Signer
from mlxjan.types import (
    ChatMessage,
    Delta,
    Finished,
    GenerationRequest,
    ReasoningDelta,
    ReasoningOptions,
    Started,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

MODEL_ID = "tiny"
SIGNER = Signer(key=bytes(range(32)))
OTHER_SERVER = Signer(key=bytes(32))
USER = [{"role": "user", "content": "2+2?"}]


def request(**fields: Any) -> s.MessagesRequest:
    body: dict[str, Any] = {"model": "claude-sonnet-5-5", "max_tokens": 64, "messages": USER}
    body.update(fields)
    return s.MessagesRequest.model_validate(body)


def generation(*, budget: int | None = None, **fields: Any) -> GenerationRequest:
    return to_generation_request(request(**fields), MODEL_ID, signer=SIGNER,
                                 reasoning_budget=budget)


def thinking_block(text: str, signature: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "thinking", "thinking": text}
    if signature is not None:
        block["signature"] = signature
    return block


def history(*assistant: dict[str, Any]) -> tuple[ChatMessage, ...]:
    """The converted messages of a turn whose assistant reply holds `assistant` blocks."""
    return generation(messages=[*USER, {"role": "assistant", "content": list(assistant)},
                                {"role": "user", "content": "and 3+3?"}]).messages


def ours(text: str) -> str:
    return SIGNER.sign(text, context=MODEL_ID)


# --- request: thinking -> ReasoningOptions ---------------------------------------------------


@pytest.mark.parametrize("thinking", [None, {"type": "disabled"}, {"type": "between_tools"}])
def test_no_thinking_unless_asked(thinking: dict[str, Any] | None) -> None:
    fields = {} if thinking is None else {"thinking": thinking}
    assert generation(budget=500, **fields).reasoning == ReasoningOptions(enabled=False)


def test_enabled_brings_its_own_budget_below_the_minimum_the_cloud_enforces() -> None:
    gen = generation(budget=500, thinking={"type": "enabled", "budget_tokens": 32})
    assert gen.reasoning == ReasoningOptions(enabled=True, budget_tokens=32)


@pytest.mark.parametrize("budget", [None, 500])
def test_adaptive_takes_the_servers_budget(budget: int | None) -> None:
    gen = generation(budget=budget, thinking={"type": "adaptive"})
    assert gen.reasoning == ReasoningOptions(enabled=True, budget_tokens=budget)


def test_adaptive_as_claude_code_sends_it_with_unknown_fields() -> None:
    gen = generation(budget=500, max_tokens=32000,
                     thinking={"type": "adaptive", "display": "summarized", "future": 1},
                     output_config={"effort": "medium", "format": None, "other": True})
    assert gen.reasoning == ReasoningOptions(enabled=True, effort="medium", budget_tokens=500)


def test_enabled_without_a_budget_takes_the_servers() -> None:
    gen = generation(budget=77, thinking={"type": "enabled"})
    assert gen.reasoning == ReasoningOptions(enabled=True, budget_tokens=77)


@pytest.mark.parametrize(("effort", "expected"), [
    ("low", "low"), ("medium", "medium"), ("high", "high"), ("xhigh", "high"),
    ("max", "high"), ("unheard-of", None), (None, None)])
def test_effort_is_mapped_and_unknown_values_ignored(effort: str | None,
                                                     expected: str | None) -> None:
    gen = generation(thinking={"type": "adaptive"}, output_config={"effort": effort})
    assert gen.reasoning.effort == expected


def test_effort_without_thinking_asks_no_thinking() -> None:
    gen = generation(output_config={"effort": "high"})
    assert gen.reasoning == ReasoningOptions(enabled=False)


@pytest.mark.parametrize("budget", [64, 65, 10_000])
def test_a_budget_that_leaves_no_room_to_answer_is_refused(budget: int) -> None:
    with pytest.raises(InvalidRequestError) as info:
        generation(max_tokens=64, thinking={"type": "enabled", "budget_tokens": budget})
    assert info.value.param == "thinking.budget_tokens"
    assert "thinking.budget_tokens" in info.value.message
    assert "max_tokens (64)" in info.value.message
    assert info.value.status == 400 and info.value.anthropic_type == "invalid_request_error"


def test_a_budget_just_below_max_tokens_is_accepted() -> None:
    gen = generation(max_tokens=64, thinking={"type": "enabled", "budget_tokens": 63})
    assert gen.reasoning.budget_tokens == 63


def test_count_tokens_takes_thinking_without_a_max_tokens_check() -> None:
    req = s.CountTokensRequest.model_validate({
        "model": "claude-sonnet-5-5", "messages": USER,
        "thinking": {"type": "enabled", "budget_tokens": 100_000}})
    assert to_generation_request(req, MODEL_ID).reasoning == ReasoningOptions(
        enabled=True, budget_tokens=100_000)


@pytest.mark.parametrize("thinking", [{"type": "sometimes"}, {"type": "enabled",
                                                              "budget_tokens": -1}])
def test_malformed_thinking_is_refused_by_the_schema(thinking: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        request(thinking=thinking)


# --- history: thinking blocks sent back ---------------------------------------------------------


def test_a_thinking_block_with_our_signature_is_the_turns_reasoning() -> None:
    msgs = history(thinking_block("Simple sum.", ours("Simple sum.")),
                   {"type": "text", "text": "4"})
    assert msgs[1] == ChatMessage("assistant", "4", reasoning="Simple sum.")


def test_several_trusted_thinking_blocks_are_joined() -> None:
    msgs = history(thinking_block("First.", ours("First.")), {"type": "text", "text": "4"},
                   thinking_block("Second.", ours("Second.")))
    assert msgs[1] == ChatMessage("assistant", "4", reasoning="First.\nSecond.")


def test_trusted_thinking_before_a_tool_call_stays_with_it() -> None:
    msgs = history(thinking_block("Need a tool.", ours("Need a tool.")),
                   {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}})
    assert msgs[1] == ChatMessage("assistant", "", reasoning="Need a tool.",
                                  tool_calls=(ToolCall("toolu_1", "calc", "{}"),))


@pytest.mark.parametrize("signature", [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param("sig", id="not-ours"),
    pytest.param(ours("Something else."), id="another-texts"),
    pytest.param(SIGNER.sign("Simple sum.", context="other-model"), id="another-models"),
    pytest.param(OTHER_SERVER.sign("Simple sum.", context=MODEL_ID), id="another-servers"),
    pytest.param(ours("Simple sum.")[:-4] + "AAA=", id="tampered"),
])
def test_thinking_without_our_signature_is_plain_text_of_the_turn(signature: str | None
                                                                   ) -> None:
    msgs = history(thinking_block("Simple sum.", signature), {"type": "text", "text": "4"})
    assert msgs[1] == ChatMessage("assistant", "Simple sum.\n\n4")
    assert msgs[1].reasoning == ""


def test_trusted_and_untrusted_thinking_in_one_turn() -> None:
    msgs = history(thinking_block("Mine.", ours("Mine.")), thinking_block("Forged.", "x"),
                   {"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"})
    assert msgs[1] == ChatMessage("assistant", "Forged.\n\nHello", reasoning="Mine.")


def test_untrusted_thinking_alone_is_the_turns_text() -> None:
    msgs = history(thinking_block("Only this.", "forged"))
    assert msgs[1] == ChatMessage("assistant", "Only this.")


def test_redacted_thinking_is_dropped() -> None:
    msgs = history({"type": "redacted_thinking", "data": "opaque"},
                   {"type": "text", "text": "4"})
    assert msgs[1] == ChatMessage("assistant", "4")
    assert all("opaque" not in m.content + m.reasoning for m in msgs)


def test_without_a_signer_no_thinking_is_trusted() -> None:
    req = request(messages=[*USER, {"role": "assistant", "content": [
        thinking_block("Simple sum.", ours("Simple sum.")), {"type": "text", "text": "4"}]}])
    assert to_generation_request(req, MODEL_ID).messages[1] == ChatMessage(
        "assistant", "Simple sum.\n\n4")


def test_thinking_in_a_user_turn_is_never_reasoning() -> None:
    msgs = generation(messages=[{"role": "user", "content": [
        thinking_block("Pasted.", ours("Pasted.")), {"type": "text", "text": "hi"}]}]).messages
    assert msgs == (ChatMessage("user", "Pasted.\n\nhi"),)


def test_count_tokens_sees_the_same_history() -> None:
    body: dict[str, Any] = {"model": "claude-sonnet-5-5", "messages": [
        *USER, {"role": "assistant", "content": [
            thinking_block("Mine.", ours("Mine.")), thinking_block("Forged.", "x"),
            {"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "4"}]}]}
    counted = to_generation_request(s.CountTokensRequest.model_validate(body), MODEL_ID,
                                    signer=SIGNER)
    sent = to_generation_request(s.MessagesRequest.model_validate({**body, "max_tokens": 9}),
                                 MODEL_ID, signer=SIGNER)
    assert counted.messages == sent.messages
    assert counted.messages[1] == ChatMessage("assistant", "Forged.\n\n4", reasoning="Mine.")


# --- whole responses ---------------------------------------------------------------------------

SHOWN = ThinkingOutput(SIGNER, MODEL_ID)
DONE = Finished("stop", Usage(10, 8))


def content(deltas: list[Delta], thinking: ThinkingOutput | None = SHOWN
            ) -> list[dict[str, Any]]:
    out = message("msg_1", "claude-sonnet-5-5", deltas, DONE, thinking)
    return out.model_dump(mode="json")["content"]  # type: ignore[no-any-return]


def test_thinking_block_comes_first_with_our_signature() -> None:
    blocks = content([ReasoningDelta("Two and "), ReasoningDelta("two."), TextDelta("4")])
    assert blocks == [
        {"type": "thinking", "thinking": "Two and two.", "signature": ours("Two and two.")},
        {"type": "text", "text": "4"},
    ]
    assert SIGNER.verify("Two and two.", blocks[0]["signature"], context=MODEL_ID)


def test_thinking_then_text_then_tool_use() -> None:
    blocks = content([ReasoningDelta("Use calc."), TextDelta("Calling."),
                      ToolCallDelta(0, "call_a", "calc", '{"x": 1}')])
    assert [b["type"] for b in blocks] == ["thinking", "text", "tool_use"]


def test_reasoning_is_dropped_when_thinking_is_off() -> None:
    blocks = content([ReasoningDelta("Secret."), TextDelta("4")], thinking=None)
    assert blocks == [{"type": "text", "text": "4"}]


@pytest.mark.parametrize("reasoning", [[], [ReasoningDelta("")]])
def test_no_thinking_block_without_reasoning_text(reasoning: list[Delta]) -> None:
    assert content([*reasoning, TextDelta("4")]) == [{"type": "text", "text": "4"}]


def test_display_omitted_sends_an_empty_signed_block() -> None:
    omitted = thinking_output(s.ThinkingConfig(type="adaptive", display="omitted"), SIGNER,
                              MODEL_ID)
    assert omitted == ThinkingOutput(SIGNER, MODEL_ID, shown=False)
    blocks = content([ReasoningDelta("Secret."), TextDelta("4")], omitted)
    assert blocks[0] == {"type": "thinking", "thinking": "", "signature": ours("")}


@pytest.mark.parametrize(("thinking", "on"), [
    (None, False), ({"type": "disabled"}, False), ({"type": "between_tools"}, False),
    ({"type": "adaptive"}, True), ({"type": "enabled", "budget_tokens": 32}, True)])
def test_thinking_output_only_when_asked(thinking: dict[str, Any] | None, on: bool) -> None:
    config = None if thinking is None else s.ThinkingConfig.model_validate(thinking)
    assert (thinking_output(config, SIGNER, MODEL_ID) is not None) is on


# --- streamed responses ------------------------------------------------------------------------

Events = list[tuple[str, dict[str, Any]]]


def streamed(deltas: list[Delta], thinking: ThinkingOutput | None = SHOWN) -> Events:
    stream = MessageStream("msg_1", "claude-sonnet-5-5", thinking)
    raw = list(stream.start(Started(10)))
    for delta in deltas:
        raw.extend(stream.on_delta(delta))
    raw.extend(stream.finish(DONE))
    return [(name, payload.model_dump(mode="json")) for name, payload in raw]


def test_exact_events_for_thinking_then_text() -> None:
    events = streamed([ReasoningDelta("Two and "), ReasoningDelta(""), ReasoningDelta("two."),
                       TextDelta("4")])
    assert events[1:-2] == [
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "thinking_delta", "thinking": "Two and "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "thinking_delta", "thinking": "two."}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "signature_delta", "signature": ours("Two and two.")}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "4"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]


def blocks(events: Events) -> list[dict[str, Any]]:
    """Each block rebuilt from its events; checks a signature_delta comes right before the
    stop of each thinking block, and nowhere else."""
    out: list[dict[str, Any]] = []
    previous = ""
    for name, payload in events[1:-2]:
        if name == "content_block_start":
            out.append(dict(payload["content_block"]))
        elif name == "content_block_delta":
            block, delta = out[payload["index"]], payload["delta"]
            assert payload["index"] == len(out) - 1
            if delta["type"] == "thinking_delta":
                assert block["type"] == "thinking" and not block["signature"]
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                assert block["type"] == "thinking" and not block["signature"]
                block["signature"] = delta["signature"]
            elif delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                block["input"] = delta["partial_json"]
        elif name == "content_block_stop":
            block = out[payload["index"]]
            if block["type"] == "thinking":
                assert previous == "signature_delta", "the signature comes right before stop"
        previous = name if name != "content_block_delta" else payload["delta"]["type"]
    return out


def test_thinking_then_text_then_tool_use_stream() -> None:
    events = streamed([ReasoningDelta("Use "), ReasoningDelta("calc."), TextDelta("Calling."),
                       ToolCallDelta(0, "call_a", "calc", ""),
                       ToolCallDelta(0, None, None, '{"x": 1}')])
    assert blocks(events) == [
        {"type": "thinking", "thinking": "Use calc.", "signature": ours("Use calc.")},
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "toolu_a", "name": "calc", "input": '{"x": 1}'},
    ]


def test_thinking_straight_into_a_tool_call() -> None:
    events = streamed([ReasoningDelta("Use calc."), ToolCallDelta(0, "call_a", "calc", "{}")])
    assert [b["type"] for b in blocks(events)] == ["thinking", "tool_use"]
    names = [n if n != "content_block_delta" else p["delta"]["type"] for n, p in events]
    assert names[1:6] == ["content_block_start", "thinking_delta", "signature_delta",
                          "content_block_stop", "content_block_start"]


def test_reasoning_after_the_answer_began_opens_its_own_signed_block() -> None:
    events = streamed([ReasoningDelta("First."), TextDelta("A"), ReasoningDelta("Then."),
                       TextDelta("B")])
    assert blocks(events) == [
        {"type": "thinking", "thinking": "First.", "signature": ours("First.")},
        {"type": "text", "text": "A"},
        {"type": "thinking", "thinking": "Then.", "signature": ours("Then.")},
        {"type": "text", "text": "B"},
    ]


def test_a_stream_ending_in_thinking_still_signs_it() -> None:
    events = streamed([ReasoningDelta("Ran out.")])
    assert blocks(events) == [
        {"type": "thinking", "thinking": "Ran out.", "signature": ours("Ran out.")}]
    assert [n for n, _ in events[-4:]] == ["content_block_delta", "content_block_stop",
                                           "message_delta", "message_stop"]


def test_streamed_reasoning_is_dropped_when_thinking_is_off() -> None:
    events = streamed([ReasoningDelta("Secret."), TextDelta("4")], thinking=None)
    assert blocks(events) == [{"type": "text", "text": "4"}]
    assert all("Secret" not in str(payload) for _, payload in events)


def test_empty_reasoning_opens_no_block() -> None:
    events = streamed([ReasoningDelta(""), TextDelta("4")])
    assert blocks(events) == [{"type": "text", "text": "4"}]


def test_streamed_display_omitted_sends_only_the_signature() -> None:
    events = streamed([ReasoningDelta("Secret."), TextDelta("4")],
                      ThinkingOutput(SIGNER, MODEL_ID, shown=False))
    assert blocks(events)[0] == {"type": "thinking", "thinking": "", "signature": ours("")}
    assert all("Secret" not in str(payload) for _, payload in events)


def test_streamed_and_whole_thinking_blocks_agree() -> None:
    deltas: list[Delta] = [ReasoningDelta("Two and "), ReasoningDelta("two."), TextDelta("4")]
    assert blocks(streamed(deltas)) == content(deltas)
