"""Tool-call formats by model family, and which one a chat template teaches its model.

A format is the pair of markers that frame a call and the parser for what lies between them.
The JSON-bodied families (Qwen/Hermes `<tool_call>`, Mistral `[TOOL_CALLS]`, Llama 3 JSON,
bare JSON) are parsed here, with or without mlx-lm. The others are parsed by mlx-lm's own
`mlx_lm.tool_parsers.<parser>` modules, so a new mlx-lm release fixes them for both engines;
their markers are copied from those modules (a unit test keeps the copies equal).

Detection follows mlx-lm's `_infer_tool_parser`: the same ordered marker table, checked
against the template, then the vocabulary. Templates no row matches keep the detection this
project had before (Hermes, Mistral, Llama 3, bare JSON).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from mlxjan.chat import markers


@dataclass(frozen=True)
class ToolFormat:
    name: str
    start: str | None  # the marker that opens a call, if the family has one
    end: str | None  # the marker that closes it; None: the call runs to the end
    args_key: str = "arguments"
    # The mlx-lm module (`mlx_lm.tool_parsers.<parser>`) that parses a call's body;
    # None: the body is JSON, parsed here.
    parser: str | None = None

    @property
    def json_body(self) -> bool:
        """Whether a call is JSON inside the markers, so a JSON grammar can force one."""
        return self.parser is None


HERMES = ToolFormat("hermes", "<tool_call>", "</tool_call>")
MISTRAL = ToolFormat("mistral", "[TOOL_CALLS]", None)
LLAMA3 = ToolFormat("llama3", "<|python_tag|>", None, args_key="parameters")
JSON_ONLY = ToolFormat("json", None, None)


def _mlx(parser: str, start: str, end: str) -> ToolFormat:
    return ToolFormat(parser, start, end, parser=parser)


QWEN3_CODER = _mlx("qwen3_coder", "<tool_call>", "</tool_call>")
GLM47 = _mlx("glm47", "<tool_call>", "</tool_call>")
LAGUNA = _mlx("laguna", "<tool_call>", "</tool_call>")  # GLM 4.7's format, another name
PYTHONIC = _mlx("pythonic", "<|tool_call_start|>", "<|tool_call_end|>")
FUNCTION_GEMMA = _mlx("function_gemma", "<start_function_call>", "<end_function_call>")
GEMMA4 = _mlx("gemma4", "<|tool_call>", "<tool_call|>")
KIMI_K2 = _mlx("kimi_k2", "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>")
KIMI_K3 = _mlx("kimi_k3", "<|open|>tools<|sep|>", "<|close|>tools<|sep|>")
MINIMAX_M2 = _mlx("minimax_m2", "<minimax:tool_call>", "</minimax:tool_call>")
LONGCAT = _mlx("longcat", "<longcat_tool_call>", "</longcat_tool_call>")
# MiniCPM5 has no wrapper: each call is a `<function name=...>...</function>` element.
MINICPM5 = _mlx("minicpm5", "<function name=", "</function>")
MUSE_SPARK = _mlx("muse_spark", "<atem:function_calls>", "</atem:function_calls>")

# Every family mlx-lm has a parser for, by that parser's name. mlx-lm's `mistral` and
# `json_tools` parse what MISTRAL and HERMES parse here (ours also takes several JSON calls
# in one tag, and needs no mlx-lm).
FORMATS: dict[str, ToolFormat] = {
    fmt.name: fmt for fmt in (
        QWEN3_CODER, GLM47, LAGUNA, PYTHONIC, FUNCTION_GEMMA, GEMMA4, KIMI_K2, KIMI_K3,
        MINIMAX_M2, LONGCAT, MINICPM5, MUSE_SPARK)
} | {"mistral": MISTRAL, "json_tools": HERMES}


Rule = markers.Rule[ToolFormat]


# mlx-lm's `_infer_tool_parser` table, in its order (first match wins). Its `or` rows are
# one row per alternative here. The escaped `\\n` row matches templates that spell the
# newline as a Jinja string escape.
TEMPLATE_RULES: tuple[Rule, ...] = (
    Rule(("<minimax:tool_call>",), MINIMAX_M2),
    Rule(("<|tool_call>", "<tool_call|>"), GEMMA4),
    Rule(("<start_function_call>",), FUNCTION_GEMMA),
    Rule(("<longcat_tool_call>",), LONGCAT),
    Rule(("<arg_key>",), GLM47),
    Rule(("<|tool_list_start|>",), PYTHONIC),
    Rule(("<|tool_call_start|>",), PYTHONIC),
    Rule(("<tool_call>\\n<function=",), QWEN3_CODER),
    Rule(("<tool_call>\n<function=",), QWEN3_CODER),
    Rule(("<|tool_calls_section_begin|>",), KIMI_K2),
    Rule(('<function name="', '<param name="'), MINICPM5),
    Rule(("[TOOL_CALLS]",), MISTRAL),
    Rule(("<atem:function_calls>",), MUSE_SPARK),
    Rule(("<tool_call>", "tool_call.name"), HERMES),
)
# This project's detection from before mlx-lm's table, for templates it does not match.
LEGACY_RULES: tuple[Rule, ...] = (
    Rule(("<tool_call>",), HERMES),
    Rule(("[TOOL_CALLS]",), MISTRAL),
    Rule(("<|python_tag|>",), LLAMA3),
    Rule(("ipython",), LLAMA3),
)
# mlx-lm's fallback on the vocabulary, for conversions whose template names no marker
# (LFM2.5 has the pythonic tokens; Kimi K3's XTML tokens frame everything it writes).
VOCAB_RULES: tuple[Rule, ...] = (
    Rule(("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"), KIMI_K3),
    Rule(("<|tool_call_start|>", "<|tool_call_end|>"), PYTHONIC),
)


def detect_format(chat_template: str | None,
                  vocab: Container[str] | None = None) -> ToolFormat:
    """The tool-call convention a model's chat template (or, failing that, its vocabulary:
    token texts) teaches it."""
    found = markers.first_match(TEMPLATE_RULES + LEGACY_RULES, VOCAB_RULES, chat_template,
                                vocab)
    return found if found is not None else JSON_ONLY


def format_named(parser: str) -> ToolFormat | None:
    """The format for an mlx-lm parser name, as a tokenizer config's `tool_parser_type`
    names it; None for a name mlx-lm does not ship."""
    return FORMATS.get(parser)
