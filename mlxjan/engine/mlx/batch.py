"""Continuous batching on MLX: every running answer advances one token per forward pass.

mlx-lm's BatchGenerator holds the sequences, prefills new ones in chunks between decode
steps and samples each with its own sampler and logits processors. This module owns what
it does not: each answer's stop rules (the shared Decoder), cancellation, the redo of a tool
call under a grammar, and the prompt cache (a finished answer's KV cache is kept as a
snapshot; a new prompt starts from the snapshot that shares the longest prefix with it).
Everything here runs on the MLX engine's own thread.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxjan.engine.generation import Decoder, SampledToken
from mlxjan.engine.mlx.decode import (
    MlxRestart,
    RandomStream,
    Runner,
    make_sampler_chain,
    token_logprob,
)
from mlxjan.engine.mlx.guidance import mask_processor
from mlxjan.engine.mlx.state import CacheLayers
from mlxjan.engine.mlx.vocab import Vocab
from mlxjan.engine.prompt_cache import PERSIST_AFTER_TOKENS, PromptCache
from mlxjan.engine.thread import Sink
from mlxjan.types import SamplingParams

log = logging.getLogger(__name__)
# Prompt tokens per sequence per step: bounds how long a new prompt holds up the answers
# already streaming, and how soon a client that left is noticed.
PREFILL_CHUNK = 512
# Shorter prefixes are cheaper to recompute than to copy out of a snapshot.
MIN_REUSE_TOKENS = 32
MIN_SNAPSHOT_TOKENS = 64



@dataclass
class Answer:
    """One request in the batch; made on the engine thread.

    It samples from its own random stream, never MLX's global one, so a seeded answer
    gives the same text whatever else is in the batch.
    """

    prompt: list[int]
    sampling: SamplingParams
    decoder: Decoder
    sink: Sink
    matcher: Any = None  # from where the answer begins (after any reasoning)
    restart: MlxRestart | None = None
    uid: int = -1
    random: RandomStream = field(init=False)
    # The whole sequence so far (prompt, then every token sampled or forced), and how much
    # of it the answer proper starts after: a redo under a grammar starts again from there.
    tokens: list[int] = field(init=False)
    base: int = field(init=False)

    def __post_init__(self) -> None:
        self.random = RandomStream(self.sampling.seed)
        self.tokens, self.base = list(self.prompt), len(self.prompt)


@dataclass
class Batch:
    runner: Runner
    vocab: Vocab
    cache: PromptCache[CacheLayers]
    max_batch: int = 8
    # Text to tokens without special tokens added (for a forced end of reasoning).
    encode: Callable[[str], list[int]] = lambda text: []
    _answers: dict[int, Answer] = field(default_factory=dict)
    _generator: Any = None

    def __post_init__(self) -> None:
        self._generator = self._new_generator()

    def _new_generator(self) -> Any:
        from mlx_lm.generate import BatchGenerator

        return BatchGenerator(self.runner.model, completion_batch_size=self.max_batch,
                              prefill_batch_size=self.max_batch,
                              prefill_step_size=PREFILL_CHUNK, stream=self.runner.stream)

    @property
    def running(self) -> int:
        return len(self._answers)

    def reuse(self, prompt: list[int]) -> tuple[CacheLayers | None, int]:
        """A copy of the cached KV state sharing the longest prefix with `prompt` (trimmed to
        it), and that prefix's length; the last prompt token is always evaluated again."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        entry, shared = self.cache.lookup(prompt[:-1], at_least=MIN_REUSE_TOKENS)
        if entry is None or shared < MIN_REUSE_TOKENS:
            self.cache.miss()
            return None, 0
        # A snapshot in memory stays there for later prompts; one read from disk is fresh.
        layers = entry.state if entry.source == "disk" else copy.deepcopy(entry.state)
        excess = int(layers[0].offset) - shared
        if excess > 0 and not can_trim_prompt_cache(layers):
            self.cache.miss()  # e.g. a sliding window that has rotated past the prefix
            return None, 0
        if excess > 0:
            trim_prompt_cache(layers, excess)
        self.cache.take(entry)
        return layers, shared

    def add(self, answer: Answer, layers: CacheLayers | None, cached: int) -> None:
        self._insert(answer, layers, cached)

    def _insert(self, answer: Answer, layers: CacheLayers | None, cached: int) -> None:
        """Put the answer (back) in the batch: its sequence from `cached` on is evaluated
        again over `layers`; its grammar, once its answer proper has begun."""
        sampler, processors = make_sampler_chain(answer.sampling, answer.random)
        if answer.matcher is not None and answer.decoder.answer_start is not None:
            processors.append(mask_processor(answer.matcher, skip=answer.base))
        [answer.uid] = self._generator.insert(
            [answer.tokens[cached:]], max_tokens=[1 << 30],
            caches=[layers] if layers is not None else None,
            all_tokens=[list(answer.tokens[:cached])], samplers=[sampler],
            logits_processors=[processors])
        self._answers[answer.uid] = answer

    def step(self) -> bool:
        """One batched step (a decode token for each answer, a prefill chunk for new ones);
        False once nothing is left running."""
        for answer in [a for a in self._answers.values() if a.sink.cancelled.is_set()]:
            log.info("an answer was abandoned by its client; freed its batch slot")
            self._drop(answer)
        if not self._answers:
            return False
        try:
            _, responses = self._generator.next()
        except Exception as exc:  # the model failed: every answer in the batch fails
            self._fail_all(exc)
            return False
        for response in responses:
            found = self._answers.get(response.uid)
            if found is not None:
                self._on_token(found, int(response.token), response.logprobs)
        return bool(self._answers)

    def _on_token(self, answer: Answer, token: int, logprobs: Any) -> None:
        decoder = answer.decoder
        ended = token in self.vocab.eos
        sampling = answer.sampling
        logprob = token_logprob(token, logprobs, sampling.top_logprobs, self.vocab) \
            if sampling.logprobs and not ended else None
        was_answering = decoder.answer_start is not None
        if not ended:  # an end of generation is never evaluated
            answer.tokens.append(token)
        done = decoder.push(SampledToken(b"", end_of_generation=True) if ended else
                            SampledToken(self.vocab.piece(token), logprob=logprob))
        if decoder.redo_wanted:
            self._redo_under_grammar(answer)
            return
        forced = decoder.take_forced()
        forced_tokens = self.encode(forced) if forced and not done else []
        for forced_token in forced_tokens:
            answer.tokens.append(forced_token)
            done = decoder.push(SampledToken(self.vocab.piece(forced_token), forced=True)) \
                or done
        began = not was_answering and decoder.answer_start is not None
        if began:
            answer.base = len(answer.tokens)
        if done:
            self._done(answer)
        elif forced_tokens or (began and answer.matcher is not None):
            # Evaluate again from the last sampled token (or, after an end of generation,
            # from the forced ones): what follows it was never in the cache.
            unevaluated = len(forced_tokens) + (0 if ended else 1)
            self._continue_from(answer, len(answer.tokens) - unevaluated)

    def _continue_from(self, answer: Answer, keep: int) -> None:
        """Take the answer out and put it back with its cache trimmed to `keep` tokens, so
        what follows (forced tokens) is evaluated and its grammar, if due, applies."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        layers, _ = self._remove(answer)
        offset = int(layers[0].offset) if layers is not None else 0
        keep = min(keep, offset)
        if layers is not None and offset > keep and not can_trim_prompt_cache(layers):
            layers, keep = None, 0
        elif layers is not None and offset > keep:
            trim_prompt_cache(layers, offset - keep)
        self._insert(answer, layers, keep if layers is not None else 0)

    def _redo_under_grammar(self, answer: Answer) -> None:
        """The model began a tool call in free text: drop the answer and take it again
        greedily under the tool-call grammar, from where it began (the prompt, or the end
        of the reasoning)."""
        restart = answer.restart
        assert restart is not None
        del answer.tokens[answer.base:]
        answer.restart, answer.sampling = None, restart.sampling
        answer.matcher = restart.constraint()
        answer.decoder.push(SampledToken(b"", restart=True))
        self._continue_from(answer, answer.base - 1)

    def _done(self, answer: Answer) -> None:
        self._keep(*self._remove(answer))
        answer.decoder.finish()
        answer.sink.close()

    def _drop(self, answer: Answer) -> None:
        # A prefill cut short still computed its prefix: keep it for the client's retry.
        self._keep(*self._remove(answer))
        answer.sink.close()

    def _keep(self, layers: CacheLayers | None, tokens: list[int]) -> None:
        if layers is not None and len(tokens) >= MIN_SNAPSHOT_TOKENS:
            self.cache.put(tokens, layers, sum(int(layer.nbytes) for layer in layers),
                           persist=len(tokens) >= PERSIST_AFTER_TOKENS)

    def _remove(self, answer: Answer) -> tuple[CacheLayers | None, list[int]]:
        """Take the answer out of the batch; its KV cache and the tokens that cache holds."""
        del self._answers[answer.uid]
        extracted = self._generator.remove([answer.uid], return_prompt_caches=True)
        if answer.uid not in extracted:
            return None, []
        layers, tokens = extracted[answer.uid]
        if not layers or any(layer.empty() for layer in layers):
            return None, []
        return layers, list(tokens)[: int(layers[0].offset)]

    def _fail_all(self, error: Exception) -> None:
        for answer in list(self._answers.values()):
            answer.sink.fail(error)
            answer.sink.close()
        self._answers.clear()
        self._generator.close()
        self._generator = self._new_generator()

    def close(self) -> None:
        for answer in list(self._answers.values()):
            answer.sink.close()
        self._answers.clear()
        self._generator.close()
