"""Pure conversions for `/v1/completions` and `/infill`: wire requests to GenerationRequests
(no chat template: a raw or fill-in-the-middle prompt), engine events to wire answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from mlxjan.chat.fim import middle_stops
from mlxjan.errors import InvalidRequestError
from mlxjan.server.openai.completions import schemas as s
from mlxjan.server.openai.convert import (
    CompletionIds,
    sampling_params,
    stop_strings,
    usage_out,
)
from mlxjan.types import (
    FillInMiddle,
    Finished,
    GenerationRequest,
    Prompt,
    SamplingParams,
    SourceFile,
    TextPrompt,
    TokenLogprob,
    Usage,
)


def prompts_of(body: s.CompletionRequest) -> list[Prompt]:
    """Each prompt of the request (a string, token ids, or a list of either)."""
    prompt = body.prompt
    if isinstance(prompt, str):
        texts: list[str | list[int]] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        texts = [[p for p in prompt if isinstance(p, int)]]
    else:
        texts = [p for p in prompt if not isinstance(p, int)]
    if not texts:
        raise InvalidRequestError("prompt is empty.", param="prompt")
    if len(texts) > s.MAX_PROMPTS:
        raise InvalidRequestError(f"prompt: at most {s.MAX_PROMPTS} prompts per request.",
                                  param="prompt")
    if body.suffix is not None:
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError("suffix needs a text prompt, not token ids.",
                                      param="suffix")
        return [FillInMiddle(prefix=str(t), suffix=body.suffix) for t in texts]
    return [TextPrompt(text=t) if isinstance(t, str) else TextPrompt(tokens=tuple(t))
            for t in texts]


def to_generation_requests(body: s.CompletionRequest, defaults: SamplingParams
                           ) -> list[GenerationRequest]:
    if body.n > 1 or (body.best_of or 1) > 1:
        raise InvalidRequestError("n and best_of above 1 are not supported: send the "
                                  "request again for another completion.", param="n")
    prompts = prompts_of(body)
    if body.echo and any(not isinstance(p, TextPrompt) or p.tokens is not None
                         for p in prompts):
        raise InvalidRequestError("echo needs a text prompt without a suffix.", param="echo")
    sampling = replace(sampling_params(body, defaults, stop_strings(body.stop)),
                       max_tokens=body.max_tokens, logprobs=body.logprobs is not None,
                       top_logprobs=body.logprobs or 0)
    return [GenerationRequest(model=body.model, messages=(), prompt=p,
                              sampling=_with_middle_stops(sampling, p))
            for p in prompts]


def infill_request(body: s.InfillRequest, model: str, defaults: SamplingParams
                   ) -> GenerationRequest:
    fim = FillInMiddle(
        prefix=body.input_prefix + body.prompt, suffix=body.input_suffix,
        files=tuple(SourceFile(c.filename, c.text) for c in body.input_extra), fit=True)
    sampling = replace(
        sampling_params(body, defaults, stop_strings(body.stop)),
        max_tokens=body.n_predict if body.n_predict > 0 else None)
    return GenerationRequest(model=model, messages=(), prompt=fim,
                             sampling=_with_middle_stops(sampling, fim))


def _with_middle_stops(sampling: SamplingParams, prompt: Prompt) -> SamplingParams:
    if not isinstance(prompt, FillInMiddle):
        return sampling
    extra = tuple(x for x in middle_stops(prompt) if x not in sampling.stop)
    return replace(sampling, stop=sampling.stop + extra)


# --- engine events -> answers ------------------------------------------------------------


def legacy_logprobs(items: Sequence[TokenLogprob], offset: int) -> s.CompletionLogprobs:
    """Logprobs in the legacy shape; `offset`: where the first token starts in the
    choice's text (after an echoed prompt)."""
    offsets: list[int] = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return s.CompletionLogprobs(
        tokens=[t.token for t in items], token_logprobs=[t.logprob for t in items],
        top_logprobs=[{tok: lp for tok, lp, _ in t.top} if t.top else None for t in items],
        text_offset=offsets)


def choice(index: int, text: str, logprobs: s.CompletionLogprobs | None,
           finished: Finished | None = None) -> s.CompletionChoice:
    return s.CompletionChoice(index=index, text=text, logprobs=logprobs,
                              finish_reason=_finish_reason(finished) if finished else None)


def completion(ids: CompletionIds, choices: list[s.CompletionChoice],
               usage: Usage | None) -> s.Completion:
    return s.Completion(id=ids.id, created=ids.created, model=ids.model, choices=choices,
                        usage=usage_out(usage) if usage is not None else None)


def total_usage(usages: Sequence[Usage]) -> Usage:
    return Usage(sum(u.prompt_tokens for u in usages),
                 sum(u.completion_tokens for u in usages),
                 sum(u.cached_tokens for u in usages))


def _finish_reason(finished: Finished) -> s.FinishReasonOut:
    # Raw completions parse no tool calls; a reason the legacy shape lacks reads as "stop".
    return "length" if finished.reason == "length" else "stop"


def stop_type(finished: Finished) -> s.StopType:
    """llama-server's `stop_type` for an answer that ended by itself."""
    if finished.reason == "length":
        return "limit"
    return "word" if finished.stop_sequence else "eos"
