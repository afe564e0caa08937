"""Reasoning formats: detection from templates and vocabularies, and ReasoningSplitter giving
the same reasoning, answer and calls whatever the chunking of recorded-format outputs."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mlxjan.chat.reasoning import (
    HARMONY,
    MISTRAL_THINK,
    THINK,
    ChannelCall,
    ReasoningFormat,
    ReasoningOut,
    ReasoningSplitter,
    detect_reasoning,
    opened_in_prompt,
)
from mlxjan.types import ReasoningDelta, TextDelta
from tests.unit.chat.chunks import chunkings

Calls = list[tuple[str, str]]
Result = tuple[str, str, Calls]


def run(fmt: ReasoningFormat, chunks: Sequence[str], *, opened: bool = False) -> Result:
    """(reasoning, answer, calls) of an output fed in `chunks`."""
    splitter = ReasoningSplitter(fmt, opened=opened)
    out: list[ReasoningOut] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    out.extend(splitter.finish())
    return result(out)


def result(out: Sequence[ReasoningOut]) -> Result:
    assert all(piece.text for piece in out if not isinstance(piece, ChannelCall)), \
        "no empty deltas"
    return ("".join(p.text for p in out if isinstance(p, ReasoningDelta)),
            "".join(p.text for p in out if isinstance(p, TextDelta)),
            [(p.name, p.arguments) for p in out if isinstance(p, ChannelCall)])


# --- recorded formats ----------------------------------------------------------------------

ANALYSIS = 'User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.'
WEATHER_ARGS = '{"location":"San Francisco"}'

CASES = [
    # Qwen3 / DeepSeek-R1 with the model opening the block.
    pytest.param(THINK, False, "<think>\nThe user greets me. I should greet back.\n</think>\n\n"
                 "Hello! How can I help?",
                 ("The user greets me. I should greet back.", "Hello! How can I help?", []),
                 id="think"),
    pytest.param(THINK, False, "\n\n<think>\nHmm.\n\nMore.\n</think>\n\nHi.",
                 ("Hmm.\n\nMore.", "Hi.", []), id="think-after-whitespace"),
    pytest.param(THINK, False, "<think>\n\n</think>\n\nHi.", ("", "Hi.", []),
                 id="think-empty"),
    pytest.param(THINK, False, "<think>\nIs 1 < 2? Yes. </b> is a tag.\n</think>\n\nYes.",
                 ("Is 1 < 2? Yes. </b> is a tag.", "Yes.", []), id="think-angle-brackets"),
    pytest.param(THINK, False, "<think>\nStill going", ("Still going", "", []),
                 id="think-unterminated"),
    pytest.param(THINK, False, "<think>\nabc </thi", ("abc </thi", "", []),
                 id="think-partial-end-is-reasoning"),
    # DeepSeek-R1 distills: the generation prompt ends with `<think>\n`.
    pytest.param(THINK, True, "Okay, the user says hi.\n</think>\n\nHi there!",
                 ("Okay, the user says hi.", "Hi there!", []), id="think-opened-in-prompt"),
    pytest.param(THINK, True, "</think>\n\nStraight to it.", ("", "Straight to it.", []),
                 id="think-opened-closed-at-once"),
    pytest.param(THINK, True, "abc" + THINK.close + "Answer.", ("abc", "Answer.", []),
                 id="think-closed-by-the-server"),
    # No block: Qwen3 with enable_thinking=false, or a model that skips it.
    pytest.param(THINK, False, "Hello! How can I help?", ("", "Hello! How can I help?", []),
                 id="think-none"),
    pytest.param(THINK, False, "Use <think> tags.", ("", "Use <think> tags.", []),
                 id="think-later-tag-is-text"),
    # A stray end marker in the answer (a small model imitating the one the server wrote
    # at its budget) is dropped, the answer goes on.
    pytest.param(THINK, True, "plan\n</think>\n\n2\n</think>\n\n3.",
                 ("plan", "2\n3.", []), id="think-stray-end-in-answer"),
    pytest.param(THINK, False, "<thinking is fun", ("", "<thinking is fun", []),
                 id="think-prefix-is-text"),
    pytest.param(THINK, False, "<thi", ("", "<thi", []), id="think-partial-start-is-text"),
    pytest.param(THINK, False, "\n\n", ("", "", []), id="think-only-whitespace"),
    pytest.param(THINK, False, "", ("", "", []), id="think-empty-output"),
    # Magistral: control tokens, no line breaks around them.
    pytest.param(MISTRAL_THINK, False, "[THINK]\nOkay, 2 + 2 is 4.[/THINK]The answer is 4.",
                 ("Okay, 2 + 2 is 4.", "The answer is 4.", []), id="mistral"),
    pytest.param(MISTRAL_THINK, False, "[1] is a citation.", ("", "[1] is a citation.", []),
                 id="mistral-bracket-is-text"),
    pytest.param(MISTRAL_THINK, True, "Hmm.[/THINK]Yes.", ("Hmm.", "Yes.", []),
                 id="mistral-opened"),
    # gpt-oss, as openai-harmony's docs/format.md records it.
    pytest.param(HARMONY, False, f"<|channel|>analysis<|message|>{ANALYSIS}<|end|>"
                 "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>",
                 (ANALYSIS, "2 + 2 = 4.", []), id="harmony-final"),
    pytest.param(HARMONY, False, f"<|channel|>analysis<|message|>{ANALYSIS}<|end|>"
                 "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.",
                 (ANALYSIS, "2 + 2 = 4.", []), id="harmony-final-return-not-rendered"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Need to use function "
                 "get_weather.<|end|><|start|>assistant<|channel|>commentary "
                 "to=functions.get_weather <|constrain|>json<|message|>"
                 f"{WEATHER_ARGS}<|call|>",
                 ("Need to use function get_weather.", "", [("get_weather", WEATHER_ARGS)]),
                 id="harmony-call"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Weather.<|end|>"
                 "<|start|>assistant<|channel|>commentary to=functions.get_weather"
                 f"<|constrain|>json<|message|>{WEATHER_ARGS}",
                 ("Weather.", "", [("get_weather", WEATHER_ARGS)]),
                 id="harmony-call-not-rendered-constrain-adjacent"),
    # The recipient in the role part, as gpt-oss's chat template renders its calls.
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Tokyo.<|end|><|start|>"
                 "assistant to=functions.get_weather<|channel|>commentary json<|message|>"
                 '{"location": "Tokyo"}<|call|>',
                 ("Tokyo.", "", [("get_weather", '{"location": "Tokyo"}')]),
                 id="harmony-recipient-before-channel"),
    pytest.param(HARMONY, False, ' to=functions.get_weather<|channel|>commentary json'
                 '<|message|>{"location": "Tokyo"}<|call|>',
                 ("", "", [("get_weather", '{"location": "Tokyo"}')]),
                 id="harmony-call-first"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Plan it.<|end|>"
                 "<|start|>assistant<|channel|>commentary<|message|>**Action plan**:\n"
                 "1. Generate an HTML file\n---\nWill start executing the plan step by step"
                 "<|end|><|start|>assistant<|channel|>commentary to=functions.generate_file"
                 '<|constrain|>json<|message|>{"template": "basic_html", "path": "index.html"}'
                 "<|call|>",
                 ("Plan it.", "**Action plan**:\n1. Generate an HTML file\n---\n"
                  "Will start executing the plan step by step",
                  [("generate_file", '{"template": "basic_html", "path": "index.html"}')]),
                 id="harmony-preamble"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Compute.<|end|><|start|>"
                 "assistant to=python<|channel|>analysis<|message|>print(2 + 2)<|call|>",
                 ("Compute.\n\nprint(2 + 2)", "", []), id="harmony-builtin-tool-is-reasoning"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>One.<|end|><|start|>assistant"
                 "<|channel|>analysis<|message|>Two.<|end|><|start|>assistant<|channel|>final"
                 "<|message|>Three.<|return|>", ("One.\n\nTwo.", "Three.", []),
                 id="harmony-two-analyses"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Think.<|end|>"
                 "<|channel|>final<|message|>Done.", ("Think.", "Done.", []),
                 id="harmony-final-without-start"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Think.<|channel|>final"
                 "<|message|>Done.", ("Think.", "Done.", []), id="harmony-final-without-end"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Think.<|start|>assistant"
                 "<|channel|>final<|message|>Done.", ("Think.", "Done.", []),
                 id="harmony-start-without-end"),
    pytest.param(HARMONY, False, "<|channel|>commentary<|message|>Let me check.<|end|>"
                 "<|start|>assistant<|channel|>final<|message|>It is sunny.",
                 ("", "Let me check.\n\nIt is sunny.", []), id="harmony-preamble-then-final"),
    pytest.param(HARMONY, False, "<|channel|>commentary<|message|>Let me check.\n<|end|>"
                 "<|start|>assistant<|channel|>final<|message|>It is sunny.",
                 ("", "Let me check.\nIt is sunny.", []),
                 id="harmony-preamble-ending-a-line-then-final"),
    pytest.param(HARMONY, False, "<|channel|>commentary Hello<|end|>", ("", "Hello", []),
                 id="harmony-missing-message-token"),
    pytest.param(HARMONY, False, "<|channel|>commentary to=functions.get_weather <|constrain|>"
                 'json{"location": "SF"}<|call|>',
                 ("", "", [("get_weather", '{"location": "SF"}')]),
                 id="harmony-call-missing-message-token"),
    pytest.param(HARMONY, False, "Just text, no header.", ("", "Just text, no header.", []),
                 id="harmony-no-header"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Cut off", ("Cut off", "", []),
                 id="harmony-unterminated-analysis"),
    pytest.param(HARMONY, False, "<|channel|>analysis<|message|>Hi.<|end|><|start|>assistant"
                 "<|channel|>fin", ("Hi.", "", []), id="harmony-header-cut-off"),
    pytest.param(HARMONY, True, "Thinking." + HARMONY.close + "Answer.",
                 ("Thinking.", "Answer.", []), id="harmony-opened-and-closed-by-the-server"),
]


@pytest.mark.parametrize(("fmt", "opened", "output", "expected"), CASES)
def test_same_result_for_every_chunking(fmt: ReasoningFormat, opened: bool, output: str,
                                        expected: Result) -> None:
    for chunks in chunkings(output):
        assert "".join(chunks) == output
        assert run(fmt, chunks, opened=opened) == expected, chunks


@pytest.mark.parametrize(("fmt", "opened", "output", "expected"), CASES)
def test_state_after_each_feed_depends_only_on_what_was_fed(
        fmt: ReasoningFormat, opened: bool, output: str, expected: Result) -> None:
    one_by_one = ReasoningSplitter(fmt, opened=opened)
    states = [(one_by_one.reasoning, one_by_one.answering)]
    for char in output:
        one_by_one.feed(char)
        states.append((one_by_one.reasoning, one_by_one.answering))
    for i in range(len(output) + 1):
        splitter = ReasoningSplitter(fmt, opened=opened)
        splitter.feed(output[:i])
        assert (splitter.reasoning, splitter.answering) == states[i], output[:i]
        assert not (splitter.reasoning and splitter.answering)
    if fmt is not HARMONY:  # tags: once the answer begins it never stops
        answering = [a for _, a in states]
        assert answering == sorted(answering)


# --- what is held back, and for how long ---------------------------------------------------


def test_think_streams_as_soon_as_no_marker_can_be_pending() -> None:
    splitter = ReasoningSplitter(THINK, opened=False)
    assert splitter.feed("\n") == [] and not splitter.reasoning and not splitter.answering
    assert splitter.feed("<th") == [] and not splitter.reasoning  # may be <think>
    assert splitter.feed("ink>") == [] and splitter.reasoning  # the marker's token counts
    assert splitter.feed("\n") == []
    assert splitter.feed("Let me see") == [ReasoningDelta("Let me see")]
    assert splitter.feed(". Ok </th") == [ReasoningDelta(". Ok")]  # space: may end the block
    assert splitter.feed("e") == [ReasoningDelta(" </the")]
    assert splitter.feed("\n</think>") == [] and splitter.answering
    assert not splitter.reasoning
    assert splitter.feed("\n\n") == []
    assert splitter.feed("Hel") == [TextDelta("Hel")]
    assert splitter.feed("lo <think> x") == [TextDelta("lo <think> x")]
    assert splitter.finish() == []


def test_an_answer_without_reasoning_flows_from_its_first_character() -> None:
    splitter = ReasoningSplitter(THINK, opened=False)
    assert splitter.feed("<") == [] and not splitter.answering
    assert splitter.feed("b") == [TextDelta("<b")] and splitter.answering
    plain = ReasoningSplitter(THINK, opened=False)
    assert plain.feed("H") == [TextDelta("H")] and plain.answering


def test_opened_in_prompt_starts_inside_reasoning() -> None:
    splitter = ReasoningSplitter(THINK, opened=True)
    assert splitter.reasoning and not splitter.answering
    assert splitter.feed("<think>") == [ReasoningDelta("<think>")]  # no start to look for


def test_harmony_streams_channels_and_holds_calls_until_they_end() -> None:
    splitter = ReasoningSplitter(HARMONY, opened=False)
    assert splitter.feed("<|channel|>analysis") == [] and not splitter.reasoning
    assert splitter.feed("<|message|>Need") == [ReasoningDelta("Need")]
    assert splitter.reasoning and not splitter.answering
    assert splitter.feed(" weather.<|e") == [ReasoningDelta(" weather.")]
    assert splitter.feed("nd|>") == [] and not splitter.reasoning
    assert splitter.feed("<|start|>assistant<|channel|>commentary to=functions.get_weather"
                         " <|constrain|>json<|message|>{\"location\":") == []
    assert not splitter.reasoning and not splitter.answering
    assert splitter.feed('"SF"}<|call|>') == [ChannelCall("get_weather", '{"location":"SF"}')]
    assert splitter.finish() == []


def test_harmony_final_is_the_answer() -> None:
    splitter = ReasoningSplitter(HARMONY, opened=False)
    splitter.feed("<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>final")
    assert not splitter.answering
    assert splitter.feed("<|message|>4") == [TextDelta("4")] and splitter.answering
    assert splitter.feed(".<|ret") == [TextDelta(".")]
    assert splitter.feed("urn|>") == []
    preamble = ReasoningSplitter(HARMONY, opened=False)
    preamble.feed("<|channel|>commentary<|message|>Checking.")
    assert not preamble.answering  # analysis may still follow a preamble


def test_no_marker_text_reaches_either_stream() -> None:
    for fmt, opened, output, _ in (case.values for case in CASES):
        assert isinstance(fmt, ReasoningFormat) and isinstance(output, str)
        reasoning, answer, calls = run(fmt, list(output), opened=bool(opened))
        markers = ("<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|call|>",
                   "<|return|>", "<|constrain|>", "[THINK]", "[/THINK]", "</think>")
        assert not any(m in reasoning for m in markers), output
        if fmt is HARMONY:
            assert not any(m in answer for m in markers), output
        assert not any(m in args for _, args in calls for m in markers)


# --- detection -----------------------------------------------------------------------------

# Distinctive parts of real templates.
QWEN3 = (
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n')"
    ".split('<think>')[-1].lstrip('\\n') %}\n"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n')"
    " + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}"
)
# DeepSeek's markers are spelled with FULLWIDTH VERTICAL LINE, not `|`.
ASSISTANT, USER = "<\uff5cAssistant\uff5c>", "<\uff5cUser\uff5c>"
BOS, EOS = "<\uff5cbegin▁of▁sentence\uff5c>", "<\uff5cend▁of▁sentence\uff5c>"
DEEPSEEK_R1 = (
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}"
    f"{{% endif %}}{{{{'{ASSISTANT}' + content + '{EOS}'}}}}"
    f"{{% if add_generation_prompt and not ns.is_tool %}}{{{{'{ASSISTANT}<think>\\n'}}}}"
    "{% endif %}"
)
MAGISTRAL = (
    "{%- elif block['type'] == 'thinking' %}\n"
    "    {{- '[THINK]' + block['thinking'] + '[/THINK]' }}\n"
    "{%- endif %}{{- '[INST]' + message['content'] + '[/INST]' }}"
)
GPT_OSS = (
    '{{- "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|end|>" }}\n'
    '{%- if add_generation_prompt -%}\n<|start|>assistant\n{%- endif -%}'
)
QWEN25 = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{{- \"\\n\\n# Tools\\n\\nYou may call one or "
    "more functions to assist with the user query.\\n\\n<tools>\" }}"
    "{{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": "
    "<function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}"
    "{%- endif %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
GEMMA = (
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
LLAMA3 = (
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
)


@pytest.mark.parametrize(("template", "fmt"), [
    pytest.param(QWEN3, THINK, id="qwen3"),
    pytest.param(DEEPSEEK_R1, THINK, id="deepseek-r1"),
    pytest.param(MAGISTRAL, MISTRAL_THINK, id="magistral"),
    pytest.param(GPT_OSS, HARMONY, id="gpt-oss"),
    pytest.param(QWEN25, None, id="qwen2.5-tools"),
    pytest.param(GEMMA, None, id="gemma"),
    pytest.param(LLAMA3, None, id="llama3"),
    pytest.param("", None, id="empty"),
    pytest.param(None, None, id="none"),
])
def test_detect_from_template(template: str | None, fmt: ReasoningFormat | None) -> None:
    assert detect_reasoning(template) is fmt
    assert detect_reasoning(template, vocab={"<|im_start|>", "<tool_call>"}) is fmt


def test_detect_from_vocabulary_when_the_template_says_nothing() -> None:
    assert detect_reasoning(None, vocab={"<think>", "</think>", "<|im_start|>"}) is THINK
    assert detect_reasoning(QWEN25, vocab={"<think>", "</think>"}) is THINK
    assert detect_reasoning(None, vocab={"[THINK]", "[/THINK]", "[INST]"}) is MISTRAL_THINK
    assert detect_reasoning(None, vocab={"<|start|>", "<|end|>", "<|message|>",
                                         "<|channel|>"}) is HARMONY
    assert detect_reasoning(None, vocab={"<think>"}) is None  # both markers, or it isn't
    assert detect_reasoning(None, vocab=set()) is None
    # The template wins over the vocabulary; harmony's control tokens over a `<think>` that
    # a template may merely mention.
    assert detect_reasoning(GPT_OSS + "Never write <think> tags.") is HARMONY
    assert detect_reasoning(GPT_OSS, vocab={"<think>", "</think>"}) is HARMONY


def test_formats() -> None:
    assert (THINK.start, THINK.end, THINK.special_tokens) == ("<think>", "</think>", False)
    assert THINK.close.strip() == THINK.end
    assert (MISTRAL_THINK.start, MISTRAL_THINK.end) == ("[THINK]", "[/THINK]")
    assert MISTRAL_THINK.special_tokens and HARMONY.special_tokens
    assert (HARMONY.start, HARMONY.end) == ("<|channel|>analysis<|message|>", "<|end|>")
    assert HARMONY.close == "<|end|><|start|>assistant<|channel|>final<|message|>"


# --- opened_in_prompt ----------------------------------------------------------------------

QWEN3_PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(("fmt", "prompt", "opened"), [
    pytest.param(THINK, f"{BOS}{USER}Hi{ASSISTANT}<think>\n", True, id="deepseek-r1-distill"),
    pytest.param(THINK, QWEN3_PROMPT + "<think>\n", True, id="qwen3-thinking-2507"),
    pytest.param(THINK, QWEN3_PROMPT, False, id="qwen3-model-opens"),
    pytest.param(THINK, QWEN3_PROMPT + "<think>\n\n</think>\n\n", False,
                 id="qwen3-thinking-off-empty-block"),
    pytest.param(THINK, QWEN3_PROMPT + "<think>\n" + THINK.close, False,
                 id="closed-by-the-server"),
    pytest.param(THINK, "<|im_start|>user\nWhat does <think> do?<|im_end|>\n"
                 "<|im_start|>assistant\n", False, id="quoted-by-the-user"),
    pytest.param(MISTRAL_THINK, "[INST]Hi[/INST]", False, id="magistral"),
    pytest.param(MISTRAL_THINK, "[INST]Hi[/INST][THINK]", True, id="magistral-opened"),
    pytest.param(HARMONY, "<|start|>user<|message|>Hi<|end|><|start|>assistant", False,
                 id="harmony"),
    pytest.param(HARMONY, "<|start|>user<|message|>Hi<|end|><|start|>assistant"
                 + HARMONY.start, True, id="harmony-opened-by-the-server"),
    pytest.param(HARMONY, "<|start|>assistant" + HARMONY.start + HARMONY.close, False,
                 id="harmony-closed-by-the-server"),
])
def test_opened_in_prompt(fmt: ReasoningFormat, prompt: str, opened: bool) -> None:
    assert opened_in_prompt(fmt, prompt) is opened
