"""Wire types of `/v1/completions` (OpenAI's legacy completions) and `/infill`
(llama-server's fill-in-the-middle, as llama.vim and llama.vscode send it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlxjan.server.keep_alive import KeepAliveField
from mlxjan.server.openai.schemas import StreamOptions, UsageOut

_LENIENT = ConfigDict(extra="ignore")
# /infill has no required field, so a wrong type must fail on its own: strict (no bool for
# an int, no number for a string), as llama-server's JSON reading is.
_STRICT = ConfigDict(extra="ignore", strict=True)
# Prompts one request may list: each runs as an answer of its own, side by side.
MAX_PROMPTS = 16


class CompletionRequest(BaseModel):
    model_config = _LENIENT

    model: str = Field(min_length=1, max_length=256)
    keep_alive: KeepAliveField = None
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description=f"Text or token ids, or a list of either (at most {MAX_PROMPTS}).")
    suffix: str | None = Field(
        default=None, description="Text after the completion: fill-in-the-middle.")
    max_tokens: int | None = Field(default=16, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=100_000)
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    n: int = Field(default=1, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=1, le=128)
    user: str | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


FinishReasonOut = Literal["stop", "length", "content_filter"]


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReasonOut | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: UsageOut | None = None


# --- /infill -----------------------------------------------------------------------------


class ExtraChunk(BaseModel):
    model_config = _STRICT
    filename: str = Field(default="tmp", max_length=4096)
    text: str = ""


class InfillRequest(BaseModel):
    """llama-server's fields; those only it has (slots, samplers order, cache_prompt: the
    prompt cache is always on here) are accepted and ignored."""

    model_config = _STRICT

    model: str | None = Field(default=None, min_length=1, max_length=256)
    keep_alive: KeepAliveField = None
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = Field(default_factory=list, max_length=1024)
    prompt: str = Field(default="", description="Written after the prefix, at the cursor.")
    n_predict: int = Field(default=-1, ge=-1, le=1_000_000)
    t_max_predict_ms: int | None = Field(
        default=None, ge=0, le=3_600_000,
        description="Once this long has passed and a line is complete, stop there.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_k: int | None = Field(default=None, ge=0, le=100_000)
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-1, le=2**64 - 1)
    repeat_penalty: float | None = Field(default=None, gt=0, le=10)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: list[str] | None = None
    stream: bool = False
    response_fields: list[str] | None = Field(
        default=None, max_length=64,
        description="Only these fields of the answer ('timings/prompt_n' for a nested one).")

    @field_validator("seed")
    @classmethod
    def _random_seed(cls, seed: int | None) -> int | None:
        return None if seed == -1 else seed  # -1: llama-server's "pick one at random"

    @property
    def repetition_penalty(self) -> float | None:
        """`repeat_penalty` under the name chat and completions use."""
        return self.repeat_penalty


class Timings(BaseModel):
    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float


StopType = Literal["none", "eos", "limit", "word"]


class InfillResult(BaseModel):
    """One answer, or one streamed chunk (`stop` false until the last)."""

    content: str
    stop: bool
    model: str
    id_slot: int = 0
    tokens_predicted: int = 0
    tokens_evaluated: int = 0
    tokens_cached: int = 0
    truncated: bool = False
    has_new_line: bool = False
    stop_type: StopType = "none"
    stopping_word: str = ""
    timings: Timings | None = None

    def selected(self, fields: list[str] | None) -> dict[str, Any]:
        """The answer as JSON, cut to `fields` like llama-server's `response_fields`."""
        data = self.model_dump(mode="json", exclude_none=True)
        if fields is None:
            return data
        picked: dict[str, Any] = {}
        for path in fields:
            value: Any = data
            for key in path.split("/"):
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                picked[path] = value
        return picked
