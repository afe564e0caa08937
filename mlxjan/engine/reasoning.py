"""How an engine runs a request's reasoning, the same for every engine: where the prompt
ends, which splitter the output goes through, and the budget the server holds it to.

A reasoning block the prompt leaves open (DeepSeek-R1's templates end the generation prompt
with `<think>`) is closed at once when the request turns reasoning off or gives it no budget.
A constrained answer (a forced tool call, a JSON schema) is constrained after the reasoning,
not during it; the grammar can only wait for a block whose start is certain, so when the
request asks for reasoning the server opens the block itself, and when it does not the
answer is constrained from its first token (a grammar leaves no room for a start marker).
"""

from __future__ import annotations

from mlxjan.chat.reasoning import ReasoningFormat, ReasoningSplitter, opened_in_prompt
from mlxjan.engine.generation import Reasoning
from mlxjan.types import GenerationRequest, ReasoningOptions


def budget(options: ReasoningOptions) -> int | None:
    """Reasoning tokens the request allows: 0 when it turns reasoning off."""
    if options.off:
        return 0
    return options.budget_tokens


def asked_for(options: ReasoningOptions) -> bool:
    """Whether the request asks for reasoning in so many words."""
    return bool(options.enabled or options.budget_tokens
                or options.effort not in (None, "none"))


def plan(fmt: ReasoningFormat | None, request: GenerationRequest,
         prompt: str) -> tuple[str, Reasoning | None]:
    """The prompt to tokenize (maybe with the block opened or closed at its end) and how
    the answer's reasoning is split; None: the output is all answer."""
    if fmt is None:
        return prompt, None
    allowed = budget(request.reasoning)
    constrained = request.constraint is not None
    skip = allowed == 0 or (constrained and not asked_for(request.reasoning))
    opened = opened_in_prompt(fmt, prompt)
    if opened and allowed == 0:
        prompt, opened = prompt + fmt.close, False
    elif not opened and skip:
        prompt += fmt.direct_answer  # harmony: straight to the final channel
    if constrained and not opened:
        if skip:
            return prompt, None
        prompt, opened = prompt + fmt.start, True
    return prompt, Reasoning(ReasoningSplitter(fmt, opened=opened), fmt.close, allowed)
