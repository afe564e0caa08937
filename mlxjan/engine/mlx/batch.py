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
    matcher: Any = None
    restart: MlxRestart | None = None
    text: str = ""  # the answer so far, for the restart check
    uid: int = -1
    random: RandomStream = field(init=False)

    def __post_init__(self) -> None:
        self.random = RandomStream(self.sampling.seed)


@dataclass
class Batch:
    runner: Runner
    vocab: Vocab
    cache: PromptCache[CacheLayers]
    max_batch: int = 8
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
        self._insert(answer, layers, cached, answer.sampling, answer.matcher)

    def _insert(self, answer: Answer, layers: CacheLayers | None, cached: int,
                sampling: SamplingParams, matcher: Any) -> None:
        sampler, processors = make_sampler_chain(sampling, answer.random)
        if matcher is not None:
            processors.append(mask_processor(matcher, skip=len(answer.prompt)))
        [answer.uid] = self._generator.insert(
            [answer.prompt[cached:]], max_tokens=[1 << 30],
            caches=[layers] if layers is not None else None,
            all_tokens=[list(answer.prompt[:cached])], samplers=[sampler],
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
        if token in self.vocab.eos:
            answer.decoder.push(SampledToken(b"", end_of_generation=True))
            self._done(answer)
            return
        piece = self.vocab.piece(token)
        if answer.restart is not None:  # the answer's text matters only until decided
            answer.text += piece.decode("utf-8", errors="ignore")
            decision = answer.restart.check(answer.text)
            if decision:
                self._redo_under_grammar(answer)
                return
            if decision is False:
                answer.restart = None
        sampling = answer.sampling
        logprob = token_logprob(token, logprobs, sampling.top_logprobs, self.vocab) \
            if sampling.logprobs else None
        if answer.decoder.push(SampledToken(piece, logprob=logprob)):
            self._done(answer)

    def _redo_under_grammar(self, answer: Answer) -> None:
        """The model began a tool call in free text: drop the answer, take it again greedily
        under the tool-call grammar, from the prompt's KV cache."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        restart = answer.restart
        assert restart is not None
        layers, _ = self._remove(answer)
        keep = len(answer.prompt) - 1
        if layers is not None and can_trim_prompt_cache(layers):
            trim_prompt_cache(layers, int(layers[0].offset) - keep)
        else:
            layers, keep = None, 0
        answer.restart, answer.text, answer.sampling = None, "", restart.sampling
        answer.decoder.push(SampledToken(b"", restart=True))
        self._insert(answer, layers, keep, restart.sampling, restart.constraint())

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
