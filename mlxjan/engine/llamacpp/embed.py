"""The llama.cpp embedding engine: a context in embedding mode, on its own engine thread.

The model loads through the one loader (decode.load) under the kernel plan its self-check
chose, the check comparing embeddings rather than next-token distributions (kernels.py).
Pooling is the model's own (mean for nomic-bert, CLS, last token); each vector comes out of
llama.cpp per sequence. Inputs are packed several to one llama_decode (engine/embedding.py
`packed`); an input longer than the context is refused, never cut short.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlxjan.engine.base import EngineStatus
from mlxjan.engine.cpu import cpu_info
from mlxjan.engine.embedding import Vector, checked_tokens, dimensions_for, packed, shaped
from mlxjan.engine.llamacpp.decode import Runtime, load
from mlxjan.engine.llamacpp.kernels import KernelCheck, KernelPlan, Verdict
from mlxjan.engine.thread import EngineThread
from mlxjan.errors import EngineError, WrongModelKindError
from mlxjan.types import EmbeddingRequest, Embeddings, Event, GenerationRequest, ModelKind

log = logging.getLogger(__name__)
# Inputs per llama_decode, and their tokens: llama.cpp attends over a whole batch at once
# and masks out the other inputs, so the attention work grows with the square of its tokens.
# Here (two cores, nomic-embed F16, 18-token texts) 128-256 tokens a batch embedded 30 texts
# a second, 512 26, 2048 11.
MAX_INPUTS = 64
BATCH_TOKENS = 256


@dataclass
class EmbeddingRuntime:
    """A model in a llama.cpp embedding context."""

    runtime: Runtime
    dimensions: int

    @classmethod
    def open(cls, weights: Path, context_length: int, threads: int | None,
             plan: KernelPlan) -> EmbeddingRuntime:
        import llama_cpp

        runtime = load(weights, context_length, threads, MAX_INPUTS, plan, embeddings=True)
        pooling = llama_cpp.llama_pooling_type(runtime.ctx.ctx)
        if pooling in (llama_cpp.LLAMA_POOLING_TYPE_NONE, llama_cpp.LLAMA_POOLING_TYPE_RANK):
            runtime.close()
            raise EngineError(f"{weights.name} does not pool its tokens into one vector per "
                              f"text (llama.cpp pooling type {pooling}): not an embedding "
                              "model llama.cpp can serve")
        return cls(runtime, runtime.model.n_embd())

    @property
    def vocabulary(self) -> int:
        size: int = self.runtime.model.n_vocab()
        return size

    def tokenize(self, text: str) -> list[int]:
        """With the special tokens the model's vocabulary adds ([CLS] ... [SEP] for BERT,
        as llama-cpp-python's `Llama.embed` tokenizes); control tokens written in the text
        stay text."""
        tokens: list[int] = self.runtime.model.tokenize(text.encode("utf-8"), True, False)
        return tokens

    def embed(self, inputs: Sequence[list[int]]) -> list[Vector]:
        """The pooled vector of each input (not normalised), in order."""
        vectors: list[Vector] = []
        for batch in packed([len(t) for t in inputs], BATCH_TOKENS, MAX_INPUTS):
            vectors.extend(self._decode([inputs[i] for i in batch]))
        return vectors

    def _decode(self, inputs: list[list[int]]) -> list[Vector]:
        import llama_cpp

        ctx = self.runtime.ctx
        batch = llama_cpp.llama_batch_init(sum(len(t) for t in inputs), 0, 1)
        try:
            _fill(batch, inputs)
            # Each batch starts from empty cells.
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx.ctx), True)
            code = llama_cpp.llama_decode(ctx.ctx, batch)
            if code != 0:
                raise EngineError(f"llama.cpp failed to embed a batch (llama_decode {code})")
            return [self._pooled(seq) for seq in range(len(inputs))]
        finally:
            llama_cpp.llama_batch_free(batch)

    def _pooled(self, seq: int) -> Vector:
        import llama_cpp

        pointer = llama_cpp.llama_get_embeddings_seq(self.runtime.ctx.ctx, seq)
        if not pointer:
            raise EngineError(f"llama.cpp gave no embedding for sequence {seq}")
        row: Vector = np.ctypeslib.as_array(pointer, shape=(self.dimensions,)).copy()
        return row

    def close(self) -> None:
        self.runtime.close()


def _fill(batch: Any, inputs: list[list[int]]) -> None:
    """Input n as sequence n from position 0, every token an output (pooling reads them
    all; llama.cpp warns and overrides otherwise)."""
    n = 0
    for seq, tokens in enumerate(inputs):
        for pos, token in enumerate(tokens):
            batch.token[n], batch.pos[n] = token, pos
            batch.n_seq_id[n], batch.seq_id[n][0] = 1, seq
            batch.logits[n] = True
            n += 1
    batch.n_tokens = n


class LlamaCppEmbeddingEngine:
    kind: ModelKind = "embedding"

    def __init__(self, model_id: str, weights: Path, *, context_length: int,
                 threads: int | None = None, kernels: KernelCheck | None = None,
                 model_key: str = "", matryoshka: bool = False) -> None:
        self.model_id = model_id
        self.weights = weights
        self.context_length = context_length
        self.threads = threads or cpu_info().physical_cores
        self.matryoshka = matryoshka
        self._kernels = kernels or KernelCheck(None, embedding=True)
        self._model_key = model_key or str(weights)
        self._verdict: Verdict | None = None
        self._runtime: EmbeddingRuntime | None = None
        self._thread = EngineThread(f"llamacpp-embed-{model_id}")
        self._embedded = 0

    async def load(self) -> None:
        await self._thread.call(self._ensure_loaded)

    def _ensure_loaded(self) -> EmbeddingRuntime:
        if self._runtime is not None:
            return self._runtime
        verdict = self._verdict = self._kernels.verdict(self.weights, self._model_key)
        plan = verdict.require()
        log.info("loading %s for embeddings (inputs of %d tokens at most, %d threads, %s: %s)",
                 self.weights, self.context_length, self.threads, plan.describe(),
                 verdict.detail)
        self._runtime = EmbeddingRuntime.open(self.weights, self.context_length, self.threads,
                                              plan)
        return self._runtime

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        return await self._thread.call(lambda: self._embed(request))

    def _embed(self, request: EmbeddingRequest) -> Embeddings:
        runtime = self._ensure_loaded()
        dimensions = dimensions_for(request.dimensions, runtime.dimensions, self.matryoshka)
        inputs = [checked_tokens(runtime.tokenize(item) if isinstance(item, str) else item,
                                 index, self.context_length, runtime.vocabulary)
                  for index, item in enumerate(request.inputs)]
        vectors = runtime.embed(inputs)
        self._embedded += len(vectors)
        return Embeddings(tuple(shaped(v, dimensions) for v in vectors),
                          sum(len(t) for t in inputs))

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        raise WrongModelKindError(self.model_id, self.kind)
        yield  # an async generator, as the Engine protocol's stream is

    async def count_tokens(self, request: GenerationRequest) -> int:
        raise WrongModelKindError(self.model_id, self.kind)

    async def unload(self) -> None:
        def drop() -> None:
            if self._runtime is not None:
                self._runtime.close()
            self._runtime = None

        await self._thread.call(drop)

    async def aclose(self) -> None:
        await self.unload()
        self._thread.close()

    def health(self) -> EngineStatus:
        return EngineStatus(
            engine="llamacpp", model=self.model_id, loaded=self._runtime is not None,
            context_length=self.context_length, threads=self.threads,
            kernels=self._verdict.detail if self._verdict else None)
