"""Render chat messages with the model's own Jinja chat template, in a sandbox.

Templates come from model files (GGUF `tokenizer.chat_template`), i.e. from the internet, so
they run in Jinja's immutable sandbox with only the helpers Hugging Face templates expect.
A model without a template is a base model (a text continuer): FALLBACK_TEMPLATE gives it the
messages' text joined by blank lines, with no role markers, as Ollama's default `{{ .Prompt }}`
does. ChatML (llama.cpp's fallback) only made base models echo the markers back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mlxjan.errors import InvalidRequestError
from mlxjan.types import ChatMessage, GenerationRequest, ReasoningOptions, TemplateValue, ToolSpec

FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}"
    "{% if not loop.last %}{{ '\n\n' }}{% endif %}{% endfor %}"
)


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


@dataclass(frozen=True)
class ChatTemplate:
    source: str | None
    bos_token: str = ""
    eos_token: str = ""

    def render_request(self, request: GenerationRequest) -> str:
        return self.render(request.messages, request.tools, template_variables(request))

    def render(self, messages: tuple[ChatMessage, ...],
               tools: tuple[ToolSpec, ...] = (),
               variables: Mapping[str, TemplateValue] | None = None) -> str:
        """The prompt; `variables` (template_variables) are what else the template reads."""
        reserved = RESERVED.intersection(variables or {})
        if reserved:
            raise InvalidRequestError(
                f"chat_template_kwargs may not set {', '.join(sorted(reserved))}",
                param="chat_template_kwargs")
        try:
            template = _compile(self.source or FALLBACK_TEMPLATE)
            return template.render(
                **(variables or {}),
                messages=[_message_dict(m) for m in messages],
                tools=[tool.template_dict() for tool in tools] or None,
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except (jinja2.TemplateError, TypeError, ValueError, LookupError) as exc:
            # The model's template refused or could not render this conversation (e.g. roles
            # must alternate, or a filter met a value of the wrong type).
            raise InvalidRequestError(f"the model's chat template rejected the messages: {exc}",
                                      param="messages") from exc


# What the template is given by the server itself, never by a request's kwargs.
RESERVED = frozenset({"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"})
# gpt-oss's template knows low, medium and high.
_EFFORT_LEVELS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}


def template_variables(request: GenerationRequest) -> dict[str, TemplateValue]:
    """What a request tells its template beside the messages: `enable_thinking` (Qwen3,
    GLM, DeepSeek V3.1 templates) and `reasoning_effort` (gpt-oss) from its reasoning
    options, where it sets them; then its own chat_template_kwargs, which win."""
    out: dict[str, TemplateValue] = {}
    options: ReasoningOptions = request.reasoning
    if options.enabled is not None or options.effort is not None:
        out["enable_thinking"] = not options.off
    if options.effort in _EFFORT_LEVELS:
        out["reasoning_effort"] = _EFFORT_LEVELS[options.effort]
    out.update(request.template_kwargs)
    return out


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.reasoning:
        # Qwen3, GLM and DeepSeek templates read `reasoning_content`; gpt-oss's `thinking`.
        out["reasoning_content"] = out["thinking"] = message.reasoning
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": _arguments(call.arguments)}}
            for call in message.tool_calls
        ]
    return out


def _arguments(text: str) -> Any:
    # Templates expect a mapping (they `tojson` it); keep the raw text if it is not JSON.
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
