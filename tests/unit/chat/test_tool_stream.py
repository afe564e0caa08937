"""ToolCallSplitter: streamed output split into text and tool calls, whatever the chunking."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from mlxjan.chat.tool_calls import HERMES, JSON_ONLY, LLAMA3, MISTRAL, ToolFormat
from mlxjan.chat.tool_stream import Out, ToolCallSplitter, assemble_calls
from mlxjan.types import TextDelta, ToolCall, ToolCallDelta, ToolSpec
from tests.unit.chat.chunks import chunkings

DECLARED: dict[str, Any] = {
    "get_weather": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]},
    "get_time": {},
}
WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {}}'
PARIS = ("get_weather", {"city": "Paris"})
NOW = ("get_time", {})
Calls = list[tuple[str, dict[str, Any]]]


def tagged(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


def run(fmt: ToolFormat, chunks: Sequence[str]) -> tuple[list[Out], list[Out]]:
    """(what came out before finish(), what came out in all)."""
    splitter = ToolCallSplitter(fmt, DECLARED)
    out: list[Out] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    before = list(out)
    out.extend(splitter.finish())
    assert splitter.calls == sum(1 for e in out if isinstance(e, ToolCallDelta) and e.id)
    return before, out


def result(events: list[Out]) -> tuple[str, Calls]:
    """The text and the calls (name, arguments) events add up to; checks the delta order."""
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert all(t.text for t in texts), "no empty text deltas"
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    # Each call: id and name with empty arguments first, then its arguments; indices 0, 1, ...
    assert len(deltas) % 2 == 0
    for index, (head, body) in enumerate(zip(deltas[::2], deltas[1::2], strict=True)):
        assert (head.index, body.index) == (index, index)
        assert head.id is not None and head.id.startswith("call_")
        assert head.name is not None and head.arguments == ""
        assert (body.id, body.name) == (None, None) and body.arguments
        assert events.index(body) == events.index(head) + 1
    calls = assemble_calls(deltas)
    assert len({c.id for c in calls}) == len(calls), "call ids are distinct"
    return "".join(t.text for t in texts), [(c.name, json.loads(c.arguments)) for c in calls]


CASES = [
    pytest.param(HERMES, tagged(WEATHER), "", [PARIS], id="hermes-call"),
    pytest.param(HERMES, f"\n{tagged(WEATHER)}\n", "", [PARIS], id="hermes-call-whitespace"),
    pytest.param(HERMES, f"<tool_call>{WEATHER}</tool_call>", "", [PARIS],
                 id="hermes-no-newlines"),
    pytest.param(HERMES, f"Let me check.\n{tagged(WEATHER)}", "Let me check.\n", [PARIS],
                 id="text-before-call"),
    pytest.param(HERMES, f"{tagged(WEATHER)}\n{tagged(TIME)}", "", [PARIS, NOW],
                 id="parallel"),
    pytest.param(HERMES, f"{tagged(WEATHER)}\n\n{tagged(TIME)}\n", "", [PARIS, NOW],
                 id="parallel-blank-lines"),
    pytest.param(HERMES, f"<tool_call>\n{WEATHER}\n{TIME}\n</tool_call>", "", [PARIS, NOW],
                 id="parallel-in-one-tag"),
    pytest.param(HERMES, f"{tagged(WEATHER)}\nDone.", "\nDone.", [PARIS],
                 id="text-after-call"),
    pytest.param(HERMES, tagged('{"name": "get_weather", "arguments": {"city": }'),
                 tagged('{"name": "get_weather", "arguments": {"city": }'), [],
                 id="invalid-body-is-text"),
    pytest.param(HERMES, tagged('{"name": "get_stock", "arguments": {}}'),
                 tagged('{"name": "get_stock", "arguments": {}}'), [],
                 id="undeclared-tool-is-text"),
    pytest.param(HERMES, f"{tagged('oops')}\n{tagged(WEATHER)}", f"{tagged('oops')}\n",
                 [PARIS], id="invalid-then-valid"),
    pytest.param(HERMES, f"<tool_call>\n{WEATHER}", "", [PARIS], id="unterminated-parses"),
    pytest.param(HERMES, f"Checking.<tool_call>\n{WEATHER}\n", "Checking.", [PARIS],
                 id="text-then-unterminated"),
    pytest.param(HERMES, '<tool_call>\n{"name": "get_weather", "argu',
                 '<tool_call>\n{"name": "get_weather", "argu', [], id="unterminated-is-text"),
    pytest.param(HERMES, f"```json\n{WEATHER}\n```", "", [PARIS], id="json-fence"),
    pytest.param(HERMES, f"```\n{WEATHER}\n```", "", [PARIS], id="plain-fence"),
    pytest.param(HERMES, WEATHER, "", [PARIS], id="bare-json"),
    pytest.param(HERMES, f"```json\n{WEATHER}\n```\nHope that helps.",
                 f"```json\n{WEATHER}\n```\nHope that helps.", [], id="fence-then-prose"),
    pytest.param(HERMES, '```python\nprint("hi")\n```', '```python\nprint("hi")\n```', [],
                 id="python-fence"),
    pytest.param(HERMES, "<b>Note</b>: it is sunny.", "<b>Note</b>: it is sunny.", [],
                 id="html-not-a-tag"),
    pytest.param(HERMES, "<tool>not a call</tool>", "<tool>not a call</tool>", [],
                 id="prefix-of-the-tag"),
    pytest.param(HERMES, "< 5 and > 3", "< 5 and > 3", [], id="less-than"),
    pytest.param(HERMES, "`x` is a variable", "`x` is a variable", [], id="backtick-code"),
    pytest.param(HERMES, "``double`` ticks", "``double`` ticks", [], id="double-backticks"),
    pytest.param(HERMES, "Hello, world!", "Hello, world!", [], id="prose"),
    pytest.param(HERMES, "\n\n", "\n\n", [], id="only-whitespace"),
    pytest.param(HERMES, "", "", [], id="empty"),
    pytest.param(JSON_ONLY, WEATHER, "", [PARIS], id="json-only-call"),
    pytest.param(JSON_ONLY, f"```json\n{WEATHER}\n```", "", [PARIS], id="json-only-fence"),
    pytest.param(JSON_ONLY, "The weather is fine.", "The weather is fine.", [],
                 id="json-only-prose"),
    pytest.param(JSON_ONLY, tagged(WEATHER), tagged(WEATHER), [], id="json-only-no-tags"),
    pytest.param(JSON_ONLY, '{"city": "Paris"}', '{"city": "Paris"}', [],
                 id="json-only-object-not-a-call"),
    pytest.param(MISTRAL, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "", [PARIS],
                 id="mistral-call"),
    pytest.param(MISTRAL, 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
                 "[TOOL_CALLS]get_time[ARGS]{}", "Sure.", [PARIS, NOW], id="mistral-parallel"),
    pytest.param(MISTRAL, f"[TOOL_CALLS][{WEATHER}, {TIME}]", "", [PARIS, NOW],
                 id="mistral-json-list"),
    pytest.param(MISTRAL, "[TOOL_CALLS]get_stock[ARGS]{}", "[TOOL_CALLS]get_stock[ARGS]{}",
                 [], id="mistral-undeclared"),
    pytest.param(MISTRAL, "[1] is a citation.", "[1] is a citation.", [],
                 id="mistral-bracket-prose"),
    pytest.param(LLAMA3, '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
                 "", [PARIS], id="llama3-python-tag"),
    pytest.param(LLAMA3, '{"name": "get_weather", "parameters": {"city": "Paris"}}', "",
                 [PARIS], id="llama3-bare"),
]


@pytest.mark.parametrize(("fmt", "output", "text", "calls"), CASES)
def test_same_result_for_every_chunking(fmt: ToolFormat, output: str, text: str,
                                        calls: Calls) -> None:
    for chunks in chunkings(output):
        assert "".join(chunks) == output
        _, events = run(fmt, chunks)
        assert result(events) == (text, calls), chunks


@pytest.mark.parametrize("separator", ["\n", "\n\n", " \n ", "\r\n"])
def test_no_whitespace_text_between_parallel_calls(separator: str) -> None:
    output = f"{tagged(WEATHER)}{separator}{tagged(TIME)}{separator}"
    for chunks in chunkings(output):
        _, events = run(HERMES, chunks)
        assert not [e for e in events if isinstance(e, TextDelta)], chunks
        assert result(events) == ("", [PARIS, NOW])


def test_a_closed_call_is_sent_before_finish() -> None:
    before, events = run(HERMES, ["Let me check.\n", tagged(WEATHER)])
    assert before == events
    assert result(before) == ("Let me check.\n", [PARIS])


def test_calls_that_run_to_the_end_are_sent_at_finish() -> None:
    for fmt, output in [(MISTRAL, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
                        (LLAMA3, '<|python_tag|>{"name": "get_time", "parameters": {}}'),
                        (HERMES, f"<tool_call>\n{WEATHER}")]:
        before, events = run(fmt, [output])
        assert before == []
        assert len(result(events)[1]) == 1


@pytest.mark.parametrize("output", [f"```json\n{WEATHER}\n```", f"```\n{WEATHER}\n```",
                                    WEATHER, '```json\n{"city": "Paris"}\n```'])
def test_fenced_or_bare_json_is_held_until_finish(output: str) -> None:
    for chunks in chunkings(output):
        before, _ = run(HERMES, chunks)
        assert before == [], chunks


@pytest.mark.parametrize("output", ['```python\nprint("hi")\n```', "<b>bold</b> text",
                                    "`x` is set", "Plain text."])
def test_text_that_cannot_be_a_call_is_released_before_finish(output: str) -> None:
    # Everything except a possible prefix of a tag or fence at the very end is out.
    for chunks in ([output], list(output)):
        before, events = run(HERMES, chunks)
        assert result(before)[0] == output
        assert len(events) == len(before)


def test_python_fence_flows_as_soon_as_its_language_is_known() -> None:
    splitter = ToolCallSplitter(HERMES, DECLARED)
    assert splitter.feed("``") == []
    assert splitter.feed("`pyth") == []  # the language line is not finished yet
    assert splitter.feed("on\n") == [TextDelta("```python\n")]
    assert splitter.feed("x = 1") == [TextDelta("x = 1")]


def test_text_waits_only_for_a_possible_tag_prefix() -> None:
    splitter = ToolCallSplitter(HERMES, DECLARED)
    assert splitter.feed("Hello <tool") == [TextDelta("Hello ")]
    assert splitter.feed("box>") == [TextDelta("<toolbox>")]
    assert splitter.feed("<tool_ca") == []
    assert splitter.finish() == [TextDelta("<tool_ca")]


def test_ids_differ_between_runs() -> None:
    first = assemble_calls(e for e in run(HERMES, [tagged(WEATHER)])[1]
                           if isinstance(e, ToolCallDelta))
    second = assemble_calls(e for e in run(HERMES, [tagged(WEATHER)])[1]
                            if isinstance(e, ToolCallDelta))
    assert first[0].id != second[0].id
    assert (first[0].name, first[0].arguments) == (second[0].name, second[0].arguments)


def test_assemble_calls_joins_fragments_by_index() -> None:
    deltas = [
        ToolCallDelta(0, "call_a", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"city": '),
        ToolCallDelta(1, "call_b", "get_time", ""),
        ToolCallDelta(0, None, None, '"Paris"}'),
        ToolCallDelta(1, None, None, "{}"),
    ]
    assert assemble_calls(deltas) == [ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
                                      ToolCall("call_b", "get_time", "{}")]
    assert assemble_calls([]) == []


# --- at most one call (parallel_tool_calls: false) ---------------------------------------------


@pytest.mark.parametrize(("fmt", "answer"), [
    pytest.param(HERMES, f"{tagged(WEATHER)}\n{tagged(TIME)}", id="hermes-two-tags"),
    pytest.param(HERMES, f"{tagged(WEATHER)} and some words", id="hermes-then-text"),
    pytest.param(HERMES, tagged(f"[{WEATHER}, {TIME}]"), id="hermes-list"),
    pytest.param(JSON_ONLY, f"[{WEATHER}, {TIME}]", id="json-list"),
    pytest.param(MISTRAL, f"[TOOL_CALLS][{WEATHER}, {TIME}]", id="mistral-list"),
])
def test_one_call_at_most_keeps_the_first_and_drops_the_rest(fmt: ToolFormat,
                                                             answer: str) -> None:
    for chunks in ([answer], list(answer)):
        splitter = ToolCallSplitter(fmt, DECLARED, max_calls=1)
        out: list[Out] = []
        for chunk in chunks:
            out.extend(splitter.feed(chunk))
        out.extend(splitter.finish())
        assert result(out) == ("", [PARIS])
        assert splitter.full


def test_a_splitter_with_room_for_calls_is_not_full() -> None:
    splitter = ToolCallSplitter(HERMES, DECLARED, max_calls=1)
    assert not splitter.full
    splitter.feed("Let me look that up. ")
    assert not splitter.full
    unlimited = ToolCallSplitter(HERMES, DECLARED)
    unlimited.feed(tagged(WEATHER) + tagged(TIME))
    assert unlimited.calls == 2 and not unlimited.full


def test_splitter_for_follows_the_request() -> None:
    from mlxjan.chat.tool_stream import splitter_for
    from mlxjan.types import GenerationRequest

    tools = (ToolSpec("get_time"),)
    assert splitter_for(GenerationRequest("m", ()), HERMES) is None
    one = splitter_for(GenerationRequest("m", (), tools=tools, parallel_tool_calls=False),
                       HERMES)
    assert one is not None
    one.feed(tagged(TIME))
    assert one.full
    many = splitter_for(GenerationRequest("m", (), tools=tools), HERMES)
    assert many is not None
    many.feed(tagged(TIME))
    assert not many.full


# --- calls found whole elsewhere (harmony's commentary channel) --------------------------------


@pytest.mark.parametrize(("name", "arguments", "text", "calls"), [
    pytest.param("get_weather", '{"city":"Paris"}', "", [PARIS], id="declared"),
    pytest.param("get_time", "{}", "", [NOW], id="no-arguments"),
    pytest.param("get_weather", ' {"city": "Paris"}\n', "", [PARIS], id="whitespace-around"),
    pytest.param("get_stock", '{"symbol":"X"}', '{"symbol":"X"}', [], id="undeclared-is-text"),
    pytest.param("get_weather", '{"city": ', '{"city": ', [], id="invalid-json-is-text"),
    pytest.param("get_weather", "{}", "{}", [], id="missing-required-is-text"),
    pytest.param("get_weather", '["Paris"]', '["Paris"]', [], id="not-an-object-is-text"),
])
def test_a_whole_call_is_checked_like_the_others(name: str, arguments: str, text: str,
                                                 calls: Calls) -> None:
    for fmt in (HERMES, JSON_ONLY, MISTRAL):
        splitter = ToolCallSplitter(fmt, DECLARED)
        events = splitter.call(name, arguments) + splitter.finish()
        assert result(events) == (text, calls)
        assert splitter.calls == len(calls)


def test_a_whole_call_comes_after_what_was_held_and_before_what_follows() -> None:
    splitter = ToolCallSplitter(HERMES, DECLARED)
    events = splitter.feed("Let me check <tool")  # "<tool" may be a tag: held
    assert events == [TextDelta("Let me check ")]
    events += splitter.call("get_weather", '{"city": "Paris"}')
    assert events[1] == TextDelta("<tool") and isinstance(events[2], ToolCallDelta)
    events += splitter.call("get_time", "{}")
    events += splitter.feed("\n")  # whitespace after calls: not an answer
    events += splitter.finish()
    assert result(events) == ("Let me check <tool", [PARIS, NOW])


def test_whole_calls_respect_max_calls() -> None:
    splitter = ToolCallSplitter(HERMES, DECLARED, max_calls=1)
    first = splitter.call("get_weather", '{"city": "Paris"}')
    assert result(first) == ("", [PARIS]) and splitter.full
    assert splitter.call("get_time", "{}") == []
    assert splitter.call("get_stock", "{}") == []  # not even as text: the answer is over
    assert splitter.feed("More text.") == [] and splitter.finish() == []


def test_text_after_a_whole_call_is_text() -> None:
    # As after a tagged call: the answer's opening is past, so bare JSON is not a call.
    splitter = ToolCallSplitter(HERMES, DECLARED)
    events = splitter.call("get_weather", '{"city": "Paris"}') + splitter.feed(TIME)
    assert result(events + splitter.finish()) == (TIME, [PARIS])
