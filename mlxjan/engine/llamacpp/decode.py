"""llama.cpp pieces for the batch (batch.py): loading a model into a context with
one KV sequence per batch slot, the sampler chain, logprobs and KV snapshots.

Written against llama-cpp-python's low-level API instead of `Llama`: that class runs one
sequence, while continuous batching needs several sequences in one context, each with its
own sampler chain (grammar and seed included).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from mlxjan.engine.cpu import CpuInfo, cpu_info
from mlxjan.engine.llamacpp.kernels import KernelPlan
from mlxjan.engine.prompt_cache import StateCodec
from mlxjan.errors import EngineError
from mlxjan.types import SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaContext, LlamaModel, LlamaSampler
    from llama_cpp.llama_grammar import LlamaGrammar

    from mlxjan.engine.generation import CallRedo

# From the answer so far: True to restart it constrained, False never, None not yet.
# Prompt tokens evaluated per step, and the grid prompt chunks are cut on: a prefill always
# ends its chunks on multiples of it, so a prompt's last chunk (and with it the logits) is
# the same whatever prefix was cached, and seeded sampling gives the same text warm or cold.
CHUNK = 512
# Prompt tokens in one llama_decode while no answer is decoding (the context's n_batch):
# llama.cpp cuts it into CHUNK-token ubatches from its start, so a call that starts on the
# grid computes what CHUNK-sized calls would, with less work between them (5% faster here).
LONE_PROMPT_BATCH = 4 * CHUNK
PENALTY_LAST_N = 64  # llama-cpp-python's default window for the repetition penalties


@dataclass
class Runtime:
    """A loaded model and its context: one KV sequence (of `context_length` tokens) per
    batch slot."""

    model: LlamaModel
    ctx: LlamaContext
    slots: int

    def tokenize(self, text: str, add_bos: bool, special: bool = True) -> list[int]:
        tokens: list[int] = self.model.tokenize(text.encode("utf-8"), add_bos, special)
        return tokens

    def piece(self, token: int, special: bool = False) -> bytes:
        piece: bytes = self.model.detokenize([token], special=special)
        return piece

    def close(self) -> None:
        self.ctx.close()
        self.model.close()


@dataclass(frozen=True)
class LlamaVocabulary:
    """A loaded model's tokenizer, as raw and fill-in-the-middle prompts use it
    (engine/raw_prompt.Vocabulary)."""

    runtime: Runtime
    add_bos: bool

    @property
    def size(self) -> int:
        size: int = self.runtime.model.n_vocab()
        return size

    @property
    def bos(self) -> int | None:
        token: int = self.runtime.model.token_bos()
        return token if self.add_bos and token >= 0 else None

    def encode(self, text: str, *, special: bool) -> list[int]:
        return self.runtime.tokenize(text, False, special) if text else []

    def marker(self, text: str) -> int | None:
        # A control token is one token when control tokens are read, several when not.
        tokens = self.encode(text, special=True)
        return tokens[0] if len(tokens) == 1 and self.encode(text, special=False) != tokens \
            else None


def flash_attention_default(cpu: CpuInfo) -> bool:
    """Whether llama.cpp's flash attention pays on this CPU, where the settings leave it open.

    Its CPU kernel is fast on whole prompt chunks and slow on a few rows at a time. On a
    two-core Xeon with AVX-512 (default model, plain kernels), against attention without it:
    a cold 6,000-token prefill 0.81x as long, but a decode step at 6,000 tokens of context
    2.1x (126 ms against 59), and 18 new tokens after 6,000 cached (a next turn) 5.9x (1.6 s
    against 0.28). Agents decode and add turns far more than they start cold (which the disk
    cache also spares), so there it is off. On a two-core Zen 3 (AVX2) a cold 2,000-token
    prefill took twice as long without it, so it stays on where AVX-512 is missing.
    """
    return "avx512f" not in cpu.flags


def context_params(context_length: int, threads: int | None, slots: int,
                   flash_attention: bool | None = None) -> dict[str, Any]:
    """What the context is made with (and what a saved KV state is only valid under: flash
    attention stores the V cache untransposed).

    Each slot gets the whole `context_length` (llama-server -np N splits its -c instead), in
    its own KV stream (kv_unified off: attention reads only that sequence's cells). Threads:
    one per physical core, for decode and prompt alike, as llama.cpp picks (a second thread
    on a hyperthread pair only contends). Flash attention: `flash_attention_default` unless
    chosen.
    """
    threads = threads or cpu_info().physical_cores
    flash = flash_attention_default(cpu_info()) if flash_attention is None else flash_attention
    return {"n_ctx": context_length * slots, "n_seq_max": slots, "kv_unified": False,
            "n_batch": LONE_PROMPT_BATCH, "n_ubatch": CHUNK, "flash_attn": flash,
            "n_threads": threads, "n_threads_batch": threads}


def load_model(weights: Path, plan: KernelPlan, *, vocab_only: bool = False) -> LlamaModel:
    """The one way a GGUF is loaded into llama.cpp: under a kernel plan (kernels.py)
    that a self-check has found right on this CPU."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp's own log: errors only (as `Llama(verbose=False)` sets)
    llama_cpp.llama_backend_init()
    params = plan.apply(llama_cpp.llama_model_default_params())
    params.vocab_only = vocab_only
    try:
        return LlamaModel(path_model=str(weights), params=params, verbose=False)
    except ValueError as exc:
        raise EngineError(f"failed to load {weights.name}: {exc}") from exc


def embedding_params(context_length: int, threads: int | None, seqs: int) -> dict[str, Any]:
    """An embedding context: one llama_decode evaluates several whole inputs, `seqs` at most
    and `context_length` tokens in all. An encoder (BERT) attends over each input at once, so
    llama.cpp needs every input whole inside one ubatch: n_ubatch is the whole batch. KV
    cells are shared (kv_unified) and cleared after each batch. Pooling is the model's own.
    Flash attention off: its f16 accumulation moved nomic-embed's unit vectors by 1.2e-4
    from llama.cpp's default (off) output; off, they are the same to 1e-8."""
    threads = threads or cpu_info().physical_cores
    return {"n_ctx": context_length, "n_seq_max": seqs, "kv_unified": True,
            "n_batch": context_length, "n_ubatch": context_length, "embeddings": True,
            "flash_attn": False, "n_threads": threads, "n_threads_batch": threads}


def load(weights: Path, context_length: int, threads: int | None, slots: int,
         plan: KernelPlan, flash_attention: bool | None = None, *,
         embeddings: bool = False) -> Runtime:
    """`embeddings`: a context that pools each input into a vector (embedding_params), with
    `slots` inputs at most per batch."""
    import llama_cpp
    from llama_cpp._internals import LlamaContext

    params = llama_cpp.llama_context_default_params()
    chosen = (embedding_params(context_length, threads, slots) if embeddings
              else context_params(context_length, threads, slots, flash_attention))
    for key, value in chosen.items():
        if key == "flash_attn":
            params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if value
                                      else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        else:
            setattr(params, key, value)
    model = load_model(weights, plan)
    try:
        ctx = LlamaContext(model=model, params=params, verbose=False)
    except ValueError as exc:
        model.close()
        raise EngineError(f"failed to load {weights.name}: {exc}") from exc
    return Runtime(model, ctx, slots)


def evaluate(runtime: Runtime, tokens: list[int], start: int, *, every_logit: bool) -> None:
    """One llama_decode of `tokens` at positions `start`.. of sequence 0, with logits at
    every position or at the last only (for checks and measurements; answers use the batch)."""
    import llama_cpp

    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        for n, token in enumerate(tokens):
            batch.token[n], batch.pos[n] = token, start + n
            batch.n_seq_id[n], batch.seq_id[n][0] = 1, 0
            batch.logits[n] = every_logit or n == len(tokens) - 1
        batch.n_tokens = len(tokens)
        code = llama_cpp.llama_decode(runtime.ctx.ctx, batch)
        if code != 0:
            raise EngineError(f"llama.cpp failed to evaluate a batch (llama_decode {code})")
    finally:
        llama_cpp.llama_batch_free(batch)


def logits_at(runtime: Runtime, index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The logits row of output `index` (-1: the last) of the last llama_decode, in place."""
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(runtime.ctx.ctx, index)
    row: np.ndarray[Any, np.dtype[np.float32]] = np.ctypeslib.as_array(
        ptr, shape=(runtime.model.n_vocab(),))
    return row


def greedy(runtime: Runtime, prompt: list[int], count: int) -> list[int]:
    """`count` greedy tokens after `prompt`, one llama_decode each, in sequence 0."""
    evaluate(runtime, prompt, 0, every_logit=False)
    tokens: list[int] = []
    while len(tokens) < count:
        tokens.append(int(logits_at(runtime, -1).argmax()))
        evaluate(runtime, tokens[-1:], len(prompt) + len(tokens) - 1, every_logit=False)
    return tokens


# A tool call begun in free text, redone under a grammar (engine/generation.py).
Restart: TypeAlias = "CallRedo[LlamaGrammar]"


def build_sampler(model: LlamaModel, sampling: SamplingParams,
                  grammar: LlamaGrammar | None, seed: int) -> LlamaSampler:
    """The same chain as llama-cpp-python builds, with an optional grammar and this
    answer's own seed (so a seeded answer does not depend on what else is in the batch)."""
    from llama_cpp._internals import LlamaSampler

    chain = LlamaSampler()
    chain.add_penalties(n_vocab=model.n_vocab(), penalty_last_n=PENALTY_LAST_N,
                        penalty_repeat=sampling.repetition_penalty,
                        penalty_freq=sampling.frequency_penalty,
                        penalty_present=sampling.presence_penalty)
    if grammar is not None:
        chain.add_grammar(model, grammar)
    if sampling.temperature <= 0:
        chain.add_greedy()
        return chain
    chain.add_top_k(sampling.top_k)
    chain.add_top_p(sampling.top_p, 1)
    chain.add_min_p(sampling.min_p, 1)
    chain.add_temp(sampling.temperature)
    chain.add_dist(seed)
    return chain


def token_logprob(runtime: Runtime, index: int, token: int, top: int) -> TokenLogprob:
    """The sampled token's log-probability from the logits at batch `index`, and the `top`
    most likely alternatives."""
    logits = logits_at(runtime, index)
    shifted = logits - logits.max()
    logsum = float(np.log(np.exp(shifted).sum()))

    def entry(tok: int) -> tuple[str, float, tuple[int, ...]]:
        raw = runtime.piece(tok)
        return raw.decode("utf-8", errors="replace"), float(shifted[tok]) - logsum, tuple(raw)

    text, value, raw = entry(token)
    best = np.argpartition(-shifted, top)[:top] if top else np.array([], dtype=np.int64)
    ranked = sorted((int(t) for t in best), key=lambda t: -float(shifted[t]))
    return TokenLogprob(text, value, raw, tuple(entry(t) for t in ranked))


# Snapshots of one sequence's KV cache, for the prompt cache (engine/prompt_cache.py).
KvState = Any  # a ctypes byte array holding one sequence's state


def _encode(state: KvState, size: int) -> memoryview:
    return memoryview(state).cast("B")[:size]


def _decode_state(data: bytearray) -> KvState:
    return (ctypes.c_uint8 * len(data)).from_buffer(data)  # shares data's memory


KV_CODEC: StateCodec[KvState] = StateCodec(_encode, _decode_state)


def snapshot(runtime: Runtime, seq: int) -> tuple[KvState, int]:
    """Copy sequence `seq`'s cache out of llama.cpp."""
    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(runtime.ctx.ctx, seq)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(runtime.ctx.ctx, buffer, size, seq)
    return buffer, int(written)


def restore(runtime: Runtime, seq: int, state: KvState, size: int) -> bool:
    """Replace sequence `seq`'s cache with a snapshot; False (sequence empty) on failure."""
    import llama_cpp

    runtime.ctx.kv_cache_seq_rm(seq, 0, -1)
    if llama_cpp.llama_state_seq_set_data(runtime.ctx.ctx, state, size, seq):
        return True
    runtime.ctx.kv_cache_seq_rm(seq, 0, -1)
    return False
