"""ChatTemplate: HF-style Jinja templates in a sandbox, and the ChatML fallback."""

from __future__ import annotations

import pytest

from mlxjan.chat.template import ChatTemplate, template_variables
from mlxjan.errors import InvalidRequestError
from mlxjan.types import ChatMessage, GenerationRequest, ReasoningOptions, ToolCall, ToolSpec

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CONVERSATION = (
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello."),
    ChatMessage("user", "2+2?"),
)


def test_renders_hf_style_template_with_generation_prompt() -> None:
    out = ChatTemplate(CHATML).render(CONVERSATION)
    assert out == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_bos_and_eos_tokens_are_available() -> None:
    template = ChatTemplate("{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}"
                            "{% endfor %}", bos_token="<s>", eos_token="</s>")
    assert template.render((ChatMessage("user", "a"), ChatMessage("assistant", "b"))) == (
        "<s>a</s>b</s>")


def test_fallback_is_the_plain_text_of_the_messages() -> None:
    # Models without a template are base models: they continue text, as in Ollama.
    template = ChatTemplate(None)
    assert template.render(CONVERSATION[:2]) == "You are terse.\n\nHi"
    assert template.render((ChatMessage("user", "The capital of France is"),)) == (
        "The capital of France is")


def test_raise_exception_becomes_invalid_request() -> None:
    template = ChatTemplate(
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m.content }}{% endfor %}"
    )
    with pytest.raises(InvalidRequestError) as info:
        template.render(CONVERSATION)
    assert "System role not supported" in info.value.message
    assert info.value.param == "messages"
    assert info.value.status == 400
    # The same template accepts a conversation it allows.
    assert template.render((ChatMessage("user", "fine"),)) == "fine"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__base__ }}",
        "{{ messages.append('x') }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_unsafe_access(source: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ChatTemplate(source).render((ChatMessage("user", "hi"),))
    assert "unsafe" in info.value.message or "not safely callable" in info.value.message


def test_syntax_error_in_template_is_invalid_request() -> None:
    with pytest.raises(InvalidRequestError):
        ChatTemplate("{% for m in messages %}").render((ChatMessage("user", "hi"),))


def test_tools_are_passed_through() -> None:
    tool = ToolSpec("get_weather", "Weather now",
                    {"type": "object", "properties": {"city": {"type": "string"}}})
    template = ChatTemplate(
        "{% if tools %}{% for t in tools %}[{{ t.function.name }}:{{ t | tojson }}]{% endfor %}"
        "{% else %}no tools{% endif %}"
    )
    out = template.render((ChatMessage("user", "weather?"),), tools=(tool,))
    assert out.startswith("[get_weather:")
    assert '"description": "Weather now"' in out and '"type": "function"' in out
    assert '"properties": {"city": {"type": "string"}}' in out
    assert template.render((ChatMessage("user", "weather?"),)) == "no tools"


def test_tool_call_arguments_reach_the_template_as_a_mapping() -> None:
    template = ChatTemplate(
        "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
        "{{ c.id }} {{ c.type }} {{ c.function.name }} city={{ c.function.arguments.city }} "
        "{{ c.function.arguments | tojson }}"
        "{% endfor %}{% elif m.role == 'tool' %} <{{ m.tool_call_id }}:{{ m.content }}>"
        "{% endif %}{% endfor %}"
    )
    messages = (
        ChatMessage("user", "weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=(
            ToolCall("call_1", "get_weather", '{"city": "Paris", "unit": "°C"}'),)),
        ChatMessage("tool", "21", tool_call_id="call_1"),
    )
    out = template.render(messages)
    # tojson keeps non-ASCII as is, like Hugging Face's.
    assert out == ('call_1 function get_weather city=Paris {"city": "Paris", "unit": "°C"}'
                   " <call_1:21>")


def test_tool_call_arguments_that_are_not_json_stay_text() -> None:
    template = ChatTemplate(
        "{% for m in messages %}{% for c in m.tool_calls or [] %}"
        "{{ c.function.arguments }}{% endfor %}{% endfor %}"
    )
    messages = (ChatMessage("assistant", "", tool_calls=(ToolCall("c", "f", "{not json"),)),)
    assert template.render(messages) == "{not json"


def test_loop_controls_and_strftime_now_are_available() -> None:
    template = ChatTemplate(
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}"
        "{% endfor %}|{{ strftime_now('%Y') | length }}"
    )
    assert template.render(CONVERSATION) == "You are terse.|4"


# --- reasoning: template variables and past reasoning --------------------------------------

QWEN3_LIKE = (
    "{% for message in messages %}{{ message.role }}:"
    "{% if message.reasoning_content %}<think>{{ message.reasoning_content }}</think>"
    "{% endif %}{{ message.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:"
    "{% if enable_thinking is defined and enable_thinking is false %}<think></think>"
    "{% endif %}{% endif %}"
    "{% if reasoning_effort is defined %}[{{ reasoning_effort }}]{% endif %}"
)


def _request(**fields: object) -> GenerationRequest:
    return GenerationRequest("m", (ChatMessage("user", "hi"),), **fields)  # type: ignore[arg-type]


def test_past_reasoning_is_rendered_where_the_template_reads_it() -> None:
    out = ChatTemplate(QWEN3_LIKE).render((
        ChatMessage("user", "2+3?"), ChatMessage("assistant", "5", reasoning="two, three"),
        ChatMessage("user", "and?")))
    assert "assistant:<think>two, three</think>5\n" in out


def test_reasoning_options_become_template_variables() -> None:
    template = ChatTemplate(QWEN3_LIKE)
    assert template.render_request(_request()).endswith("assistant:")
    off = _request(reasoning=ReasoningOptions(effort="none"))
    assert template_variables(off) == {"enable_thinking": False}
    assert template.render_request(off).endswith("assistant:<think></think>")
    high = _request(reasoning=ReasoningOptions(effort="minimal"))
    assert template_variables(high) == {"enable_thinking": True, "reasoning_effort": "low"}


def test_chat_template_kwargs_win_and_may_not_replace_the_messages() -> None:
    req = _request(reasoning=ReasoningOptions(enabled=False),
                   template_kwargs=(("enable_thinking", True),))
    assert template_variables(req)["enable_thinking"] is True
    with pytest.raises(InvalidRequestError) as caught:
        ChatTemplate(QWEN3_LIKE).render_request(_request(template_kwargs=(("messages", 1),)))
    assert caught.value.param == "chat_template_kwargs"
