"""Continuous batching on llama.cpp: running answers advance together, one token per step.

The context holds one KV sequence per slot. A new answer takes the free slot whose tokens
share the longest prefix with its prompt (or the least recently used one), trimmed to that
prefix, or a prompt-cache snapshot restored into it when that shares more; a slot about to
be overwritten is snapshotted first. Each step builds one llama_batch: the last sampled token
of each decoding answer whose turn it is, plus prompt chunks of new ones (logits only on a
prompt's last token), runs one llama_decode, and samples each answer at its own logits row
with its own sampler chain. How many decoding answers go in one step is the pace's call
(pace.py: the group size measured fastest; bigger is not always faster on CPU).
Stop rules are the shared Decoder's. Everything here runs on the engine thread.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlxjan.chat.tool_stream import ToolCallSplitter
from mlxjan.engine.generation import Decoder, Reasoning, SampledToken
from mlxjan.engine.llamacpp.decode import (
    CHUNK,
    LONE_PROMPT_BATCH,
    KvState,
    Restart,
    Runtime,
    build_sampler,
    restore,
    snapshot,
    token_logprob,
)
from mlxjan.engine.llamacpp.pace import Pace
from mlxjan.engine.prompt_cache import PERSIST_AFTER_TOKENS, PromptCache
from mlxjan.engine.thread import Sink
from mlxjan.engine.tokens import common_prefix
from mlxjan.errors import EngineError
from mlxjan.types import SamplingParams, Started

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaSampler
    from llama_cpp.llama_grammar import LlamaGrammar

log = logging.getLogger(__name__)
# Shorter prompts are cheaper to recompute than to snapshot; smaller gains not worth a restore.
MIN_SNAPSHOT_TOKENS = 512
MIN_REUSE_GAIN = 256
# A slot sharing fewer tokens than this (a chat template's opening) with a new prompt is
# only overwritten when it holds little else: another slot keeps its prefix for its return.
MIN_SLOT_REUSE = 32


@dataclass
class Answer:
    """One request: waiting for a slot, prefilling, or decoding."""

    prompt: list[int]
    sampling: SamplingParams
    grammar: LlamaGrammar | None  # from where the answer begins (after any reasoning)
    restart: Restart | None
    sink: Sink
    tool_calls: ToolCallSplitter | None = None
    reasoning: Reasoning | None = None
    special: bool = False  # render control tokens as text (the format's markers are ones)
    decoder: Decoder | None = None  # made on admission, once the cached count is known
    sampler: LlamaSampler | None = None
    pending: list[int] = field(default_factory=list)  # tokens still to evaluate
    cached: int = 0
    # The tokens the answer proper starts after (the prompt, then any reasoning): a redo
    # under a grammar starts again from there.
    base: list[int] = field(default_factory=list)


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what this sequence's KV cache holds
    answer: Answer | None = None
    used: int = 0  # when it last took an answer (an admission counter), for LRU
    advanced: int = 0  # the step that last evaluated its tokens, for taking turns


# One llama_decode: (slot, tokens to evaluate from its pending ones, logits wanted) each.
Call = list[tuple[Slot, int, bool]]


class Batch:
    def __init__(self, runtime: Runtime, cache: PromptCache[KvState],
                 decoder_for: Callable[[Answer, int], Decoder],
                 flush: Callable[[], None] = lambda: None) -> None:
        """`decoder_for(answer, cached)` makes an admitted answer's Decoder; `flush` hands
        the events emitted so far to their streams (before each decode, which takes long)."""
        import llama_cpp

        self.runtime = runtime
        self.cache = cache
        self._decoder_for = decoder_for
        self._flush = flush
        self.slots = [Slot(seq) for seq in range(runtime.slots)]
        self._waiting: deque[Answer] = deque()
        self._clock = 0
        self.pace = Pace()
        self._step_count = 0
        self._capacity = LONE_PROMPT_BATCH + runtime.slots
        self._batch = llama_cpp.llama_batch_init(self._capacity, 0, 1)

    @property
    def running(self) -> int:
        return sum(slot.answer is not None for slot in self.slots)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, answer: Answer) -> None:
        self._waiting.append(answer)

    def step(self) -> bool:
        """Admit waiting answers, then one step: a decode of the answers whose turn it is and
        prompt chunks, each its own llama_decode; False once nothing is left."""
        self._drop_cancelled()
        self._admit()
        calls = self._plan()
        if not calls:
            return False
        self._step_count += 1
        for call in calls:
            started = time.perf_counter()
            try:
                rows = self._decode(call)
            except EngineError as exc:
                self.fail_all(exc)
                return False
            if all(count == 1 for _, count, _ in call):
                self.pace.record(len(call), time.perf_counter() - started)
            self._advance(call, rows)
        return bool(self._waiting) or self.running > 0

    def _advance(self, call: Call, rows: list[int]) -> None:
        """Account for what a decode evaluated, and sample where it computed logits."""
        for (slot, count, logits), row in zip(call, rows, strict=True):
            answer = slot.answer
            assert answer is not None
            slot.advanced = self._step_count
            slot.tokens += answer.pending[:count]
            del answer.pending[:count]
            if logits:
                self._on_logits(slot, answer, row)

    # --- admission ---------------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.answer is not None and slot.answer.sink.cancelled.is_set():
                log.info("an answer was abandoned by its client; freed its slot")
                self._release(slot)
        for answer in [a for a in self._waiting if a.sink.cancelled.is_set()]:
            self._waiting.remove(answer)
            answer.sink.close()

    def _admit(self) -> None:
        while self._waiting and any(slot.answer is None for slot in self.slots):
            answer = self._waiting.popleft()
            try:
                self._place(answer)
            except Exception as exc:
                answer.sink.fail(exc)
                answer.sink.close()

    def _place(self, answer: Answer) -> None:
        slot, shared = self._pick(answer.prompt)
        self._switch(slot, answer.prompt, shared)
        keep = common_prefix(slot.tokens, answer.prompt[:-1])  # the last token for logits
        if answer.sampling.seed is not None:
            keep = keep // CHUNK * CHUNK
        if keep < len(slot.tokens) and not self.runtime.ctx.kv_cache_seq_rm(slot.seq, keep, -1):
            keep = 0  # a cache that cannot be trimmed: start over
            self.runtime.ctx.kv_cache_seq_rm(slot.seq, 0, -1)
        del slot.tokens[keep:]
        self._clock += 1
        slot.answer, slot.used = answer, self._clock
        answer.cached, answer.pending = keep, answer.prompt[keep:]
        answer.sink.emit(Started(len(answer.prompt), keep))
        answer.decoder = self._decoder_for(answer, keep)
        answer.base = answer.prompt
        answered = answer.decoder.answer_start is not None  # else the grammar waits
        answer.sampler = build_sampler(self.runtime.model, answer.sampling,
                                       answer.grammar if answered else None,
                                       _seed(answer.sampling))

    def _pick(self, prompt: list[int]) -> tuple[Slot, int]:
        """The free slot sharing the longest prefix with `prompt` among those cheap to
        overwrite (they share a real prefix, or hold little else), else the least recently
        used one; and how much it shares. A long unrelated prefix stays for its own return."""
        def score(slot: Slot) -> tuple[bool, int, int]:
            shared = common_prefix(slot.tokens, prompt[:-1])
            cheap = shared >= MIN_SLOT_REUSE or len(slot.tokens) - shared < MIN_REUSE_GAIN
            return cheap, shared if cheap else 0, -slot.used

        best = max((slot for slot in self.slots if slot.answer is None), key=score)
        return best, common_prefix(best.tokens, prompt[:-1])

    def _switch(self, slot: Slot, prompt: list[int], live_shared: int) -> None:
        """Keep the slot's cache as a snapshot before `prompt` overwrites it, and restore the
        snapshot that shares the most with `prompt` when it beats what the slot holds."""
        entry, shared = self.cache.lookup(prompt, at_least=live_shared + MIN_REUSE_GAIN)
        better = entry is not None and shared >= live_shared + MIN_REUSE_GAIN
        source = self.busy_sharing(prompt, (shared if better else live_shared) + MIN_REUSE_GAIN)
        live = slot.tokens
        overwritten = len(live) - live_shared >= MIN_REUSE_GAIN or better or source is not None
        if len(live) >= MIN_SNAPSHOT_TOKENS and overwritten and not self.cache.holds(live):
            self.cache.put(live, *snapshot(self.runtime, slot.seq))
        if source is not None:
            self._copy(source, slot)
        elif entry is not None and better:
            slot.tokens = []
            if restore(self.runtime, slot.seq, entry.state, entry.size):
                slot.tokens = list(entry.tokens)
                self.cache.take(entry)
                log.info("restored a cached prefix of %d tokens (from %s) into slot %d",
                         shared, entry.source, slot.seq)
        elif len(prompt) >= MIN_SNAPSHOT_TOKENS and live_shared < MIN_REUSE_GAIN:
            self.cache.miss()

    def busy_sharing(self, prompt: list[int], at_least: int) -> Slot | None:
        """The slot busy with another answer that shares the most of `prompt`, if it shares
        at least `at_least` tokens: its cache is copied, not computed again. An editor's
        next keystroke comes while the answer to the last one is still being cancelled;
        parallel answers share a system prompt."""
        busy = [slot for slot in self.slots if slot.answer is not None]
        best = max(busy, key=lambda slot: common_prefix(slot.tokens, prompt[:-1]),
                   default=None)
        if best is None or common_prefix(best.tokens, prompt[:-1]) < at_least:
            return None
        return best

    def _copy(self, source: Slot, slot: Slot) -> None:
        state, size = snapshot(self.runtime, source.seq)
        slot.tokens = []
        if restore(self.runtime, slot.seq, state, size):
            slot.tokens = list(source.tokens)
            log.info("copied %d cached tokens of busy slot %d into slot %d",
                     len(source.tokens), source.seq, slot.seq)

    # --- one decode ------------------------------------------------------------------------

    def _plan(self) -> list[Call]:
        """This step's decodes: a token for each of the decoding answers whose turn it is
        (as many as the pace says), then prompt chunks, up to CHUNK tokens in all (up to
        LONE_PROMPT_BATCH while none is decoding, which then waits for no one).

        A prompt is evaluated apart from other sequences, and its chunks end on multiples of
        CHUNK: its logits come out as when it runs alone (batch shapes change llama.cpp's
        arithmetic), so greedy and seeded answers do not depend on what else is running or
        was cached."""
        busy = sorted((slot for slot in self.slots if slot.answer is not None),
                      key=lambda s: s.used)
        decoding = sorted((slot for slot in busy if not _prefilling(slot)),
                          key=lambda s: s.advanced)
        # One token each, or the sampled token and a forced end of reasoning after it; in
        # ascending sequence order: llama.cpp (with a KV stream per sequence) cuts a batch
        # into one compute per ascending run of sequence ids, so 1,0,2,3 costs two steps
        # and 3,2,1,0 four (measured here: 4 answers 106 and 166 ms a step against 66).
        turn = decoding[:self.pace.group(len(decoding))]
        group = [(slot, len(_pending(slot)), True) for slot in sorted(turn, key=lambda s: s.seq)]
        calls = [group] if group else []
        limit = CHUNK if decoding else LONE_PROMPT_BATCH
        prompt_tokens = 0
        for slot in filter(_prefilling, busy):
            pending = _pending(slot)
            off_grid = len(slot.tokens) % CHUNK
            count = min(len(pending), CHUNK - off_grid if off_grid else limit)
            if prompt_tokens and prompt_tokens + count > limit:
                break
            calls.append([(slot, count, count == len(pending))])
            prompt_tokens += count
        return calls

    def _decode(self, call: Call) -> list[int]:
        """One llama_decode; each entry's logits row."""
        import llama_cpp

        batch, n, rows = self._batch, 0, []
        if sum(count for _, count, _ in call) > self._capacity:  # would write past its arrays
            raise EngineError("a decode planned more tokens than its llama_batch holds")
        for slot, count, logits in call:
            for offset, token in enumerate(_pending(slot)[:count]):
                batch.token[n], batch.pos[n] = token, len(slot.tokens) + offset
                batch.n_seq_id[n], batch.seq_id[n][0] = 1, slot.seq
                batch.logits[n] = logits and offset == count - 1
                n += 1
            rows.append(n - 1)
        batch.n_tokens = n
        self._flush()
        code = llama_cpp.llama_decode(self.runtime.ctx.ctx, batch)
        if code != 0:
            raise EngineError(f"llama.cpp failed to evaluate a batch (llama_decode {code})")
        return rows

    # --- per answer ------------------------------------------------------------------------

    def _on_logits(self, slot: Slot, answer: Answer, row: int) -> None:
        import llama_cpp

        decoder, sampler = answer.decoder, answer.sampler
        assert sampler is not None and decoder is not None
        token = sampler.sample(self.runtime.ctx, row)
        ended = bool(llama_cpp.llama_vocab_is_eog(self.runtime.model.vocab, token))
        sampling = answer.sampling
        logprob = token_logprob(self.runtime, row, token, sampling.top_logprobs) \
            if sampling.logprobs and not ended else None
        was_answering = decoder.answer_start is not None
        done = decoder.push(SampledToken(b"", end_of_generation=True) if ended else
                            SampledToken(self.runtime.piece(token, answer.special),
                                         logprob=logprob))
        if decoder.redo_wanted:
            self._redo_under_grammar(slot, answer)
            return
        pending = [] if ended else [token]  # an end of generation is never evaluated
        if not done:
            done = self._force(answer, sampler, decoder.take_forced(), pending)
        if not was_answering and decoder.answer_start is not None:
            self._begin_answer(slot, answer, pending)
        if done:
            self._done(slot)
        else:
            answer.pending = pending

    def _force(self, answer: Answer, sampler: LlamaSampler, text: str,
               pending: list[int]) -> bool:
        """Write `text` after the sampled token as if the model had (the reasoning's end
        once its budget is spent); True if that completes the answer."""
        assert answer.decoder is not None
        done = False
        for token in self.runtime.tokenize(text, False) if text else []:
            sampler.accept(token)  # the repetition penalties see it as written
            pending.append(token)
            done = answer.decoder.push(
                SampledToken(self.runtime.piece(token, answer.special), forced=True)) or done
        return done

    def _begin_answer(self, slot: Slot, answer: Answer, pending: list[int]) -> None:
        """The reasoning is over: the answer's grammar applies from the next token on."""
        answer.base = slot.tokens + pending
        if answer.grammar is not None:
            answer.sampler = build_sampler(self.runtime.model, answer.sampling, answer.grammar,
                                           _seed(answer.sampling))

    def _redo_under_grammar(self, slot: Slot, answer: Answer) -> None:
        """The model began a tool call in free text: drop the answer and take it again from
        where it began (the prompt, or the end of the reasoning), greedily under the
        tool-call grammar."""
        restart = answer.restart
        assert restart is not None and answer.decoder is not None
        keep = len(answer.base) - 1
        self.runtime.ctx.kv_cache_seq_rm(slot.seq, keep, -1)
        del slot.tokens[keep:]
        answer.restart, answer.sampling = None, restart.sampling
        answer.pending = answer.base[keep:]
        answer.sampler = build_sampler(self.runtime.model, restart.sampling, restart.constraint, 0)
        answer.decoder.push(SampledToken(b"", restart=True))

    def _done(self, slot: Slot) -> None:
        answer = slot.answer
        assert answer is not None and answer.decoder is not None
        answer.decoder.finish()
        computed = len(answer.prompt) - answer.cached
        if self.cache.persisting and computed >= PERSIST_AFTER_TOKENS:
            self.cache.persist(slot.tokens, *snapshot(self.runtime, slot.seq))
        self._release(slot)

    def _release(self, slot: Slot) -> None:
        answer = slot.answer
        slot.answer = None
        if answer is not None:
            answer.sink.close()

    def fail_all(self, error: BaseException) -> None:
        """The model failed: every answer fails, and the slots start empty."""
        for slot in self.slots:
            if slot.answer is not None:
                slot.answer.sink.fail(error)
                self._release(slot)
            self.runtime.ctx.kv_cache_seq_rm(slot.seq, 0, -1)
            slot.tokens = []

    def persist_slots(self) -> None:
        """Queue every slot's cache for the disk (at unload)."""
        for slot in self.slots:
            if self.cache.persisting and len(slot.tokens) >= MIN_SNAPSHOT_TOKENS:
                self.cache.persist(slot.tokens, *snapshot(self.runtime, slot.seq))

    def close(self) -> None:
        import llama_cpp

        for slot in self.slots:
            self._release(slot)
        while self._waiting:
            self._waiting.popleft().sink.close()
        llama_cpp.llama_batch_free(self._batch)


def _pending(slot: Slot) -> list[int]:
    return slot.answer.pending if slot.answer is not None else []


def _prefilling(slot: Slot) -> bool:
    """Whether what the slot's answer has pending is prompt (not a sampled token)."""
    answer = slot.answer
    return answer is not None and len(slot.tokens) + len(answer.pending) <= len(answer.prompt)


def _seed(sampling: SamplingParams) -> int:
    if sampling.seed is None:
        return random.getrandbits(31)
    return sampling.seed % 0xFFFFFFFF  # 0xFFFFFFFF itself means "random" to llama.cpp
