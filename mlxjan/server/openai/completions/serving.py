"""`/v1/completions` and `/infill`: the chat routes' one generation path (admission, model
lease, prompt cache, batching), with a raw or fill-in-the-middle prompt.

Several prompts in one request run side by side, as answers of one batch; a stream
interleaves their chunks, each marked with its prompt's index.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from mlxjan.engine.manager import EngineManager
from mlxjan.errors import EngineError, FillInMiddleUnsupportedError, MlxjanError
from mlxjan.server import sse
from mlxjan.server.errors import error_json
from mlxjan.server.events import KeepAlive, OpenedStream, open_on, with_keepalive
from mlxjan.server.keep_alive import requested
from mlxjan.server.openai.completions import convert
from mlxjan.server.openai.completions import schemas as s
from mlxjan.server.openai.convert import CompletionIds
from mlxjan.settings import Settings
from mlxjan.types import Finished, Generated, GenerationRequest, TextDelta, TextPrompt, Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Done:
    """A prompt's stream ended without a Finished: the server stopped it (time limit)."""


class CompletionServing:
    def __init__(self, manager: EngineManager, settings: Settings) -> None:
        self._manager = manager
        self._settings = settings

    async def _open(self, requests: Sequence[GenerationRequest], keep_alive: float | None
                    ) -> list[OpenedStream]:
        opened: list[OpenedStream] = []
        try:
            for request in requests:
                opened.append(await open_on(self._manager, request, keep_alive,
                                            self._settings.request_timeout))
        except BaseException:
            for stream in opened:
                await _close(stream.events)
            raise
        return opened

    async def create(self, body: s.CompletionRequest, keep_alive_header: str | None = None
                     ) -> Response:
        requests = convert.to_generation_requests(body, self._settings.sampling_defaults())
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        opened = await self._open(requests, keep_alive)
        ids = CompletionIds(f"cmpl-{uuid.uuid4().hex}", int(time.time()), body.model)
        echoes = [r.prompt.text if body.echo and isinstance(r.prompt, TextPrompt) else ""
                  for r in requests]
        with_logprobs = body.logprobs is not None
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _sse_chunks(ids, opened, echoes, with_logprobs, include_usage,
                            self._settings.keepalive_interval),
                media_type="text/event-stream", headers=sse.HEADERS)
        answers = await asyncio.gather(*(_collect(o.events) for o in opened))
        choices = [convert.choice(i, echoes[i] + "".join(d.text for d in deltas),
                                  _logprobs(deltas, echoes[i]) if with_logprobs else None,
                                  finished)
                   for i, (deltas, finished) in enumerate(answers)]
        usage = convert.total_usage([f.usage for _, f in answers])
        return JSONResponse(convert.completion(ids, choices, usage).model_dump(mode="json"))

    async def infill(self, body: s.InfillRequest, keep_alive_header: str | None = None
                     ) -> Response:
        model = body.model or self._settings.default_model
        request = convert.infill_request(body, model, self._settings.sampling_defaults())
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        began = time.perf_counter()
        try:
            opened = (await self._open([request], keep_alive))[0]
        except FillInMiddleUnsupportedError as err:
            err.param = "input_suffix"
            raise
        run = _Infill(model, opened, began, body.t_max_predict_ms)
        if body.stream:
            return StreamingResponse(run.chunks(body.response_fields),
                                     media_type="text/event-stream", headers=sse.HEADERS)
        return JSONResponse((await run.result()).selected(body.response_fields))


def _data(chunk: s.Completion) -> str:
    # Nulls kept: OpenAI's chunks carry `finish_reason: null` and `logprobs: null`.
    return sse.data(chunk.model_dump_json())


async def _collect(events: AsyncIterator[Generated]) -> tuple[list[TextDelta], Finished]:
    deltas: list[TextDelta] = []
    try:
        async for event in events:
            if isinstance(event, Finished):
                return deltas, event
            if isinstance(event, TextDelta):
                deltas.append(event)
    finally:
        await _close(events)
    raise EngineError("the engine ended the stream without finishing")


def _logprobs(deltas: Sequence[TextDelta], echo: str) -> s.CompletionLogprobs:
    return convert.legacy_logprobs([lp for d in deltas for lp in d.logprobs], len(echo))


async def _close(events: AsyncIterator[Generated]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


async def _merged(streams: Sequence[AsyncIterator[Generated]]
                  ) -> AsyncIterator[tuple[int, Generated]]:
    """The events of several streams as they come, each with its stream's index."""
    queue: asyncio.Queue[tuple[int, Generated | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, events: AsyncIterator[Generated]) -> None:
        try:
            async for event in events:
                await queue.put((index, event))
            await queue.put((index, None))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((index, exc))

    tasks = [asyncio.ensure_future(pump(i, events)) for i, events in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for events in streams:
            await _close(events)


async def _sse_chunks(ids: CompletionIds, opened: Sequence[OpenedStream], echoes: list[str],
                      with_logprobs: bool, include_usage: bool, keepalive: float
                      ) -> AsyncIterator[str]:
    offsets = [len(echo) for echo in echoes]
    usages: list[Usage] = []
    for index, echo in enumerate(echoes):
        if echo:
            yield _data(convert.completion(ids, [convert.choice(index, echo, None)], None))
    try:
        merged = _merged([o.events for o in opened])
        async for item in with_keepalive(merged, keepalive):
            if isinstance(item, KeepAlive):
                yield sse.comment()
                continue
            index, event = item
            if isinstance(event, Finished):
                usages.append(event.usage)
                yield _data(convert.completion(
                    ids, [convert.choice(index, "", None, event)], None))
            elif isinstance(event, TextDelta):
                logprobs = convert.legacy_logprobs(event.logprobs, offsets[index]) \
                    if with_logprobs else None
                offsets[index] += len(event.text)
                yield _data(convert.completion(
                    ids, [convert.choice(index, event.text, logprobs)], None))
    except MlxjanError as err:
        # The 200 has been sent: the error goes out in-band, then the stream ends.
        log.warning("stream %s failed: %s", ids.id, err.message)
        yield sse.data(error_json(err, "openai"))
        return
    if include_usage:
        yield _data(convert.completion(ids, [], convert.total_usage(usages)))
    yield sse.DONE


class _Infill:
    """One /infill answer: its text so far, its timings, and the time limit
    (`t_max_predict_ms`: past it, the answer ends with the first complete line)."""

    def __init__(self, model: str, opened: OpenedStream, began: float,
                 t_max_predict_ms: int | None) -> None:
        self._model = model
        self._opened = opened
        self._began = began
        self._limit = t_max_predict_ms / 1000 if t_max_predict_ms else None
        self._first: float | None = None
        self._text = ""
        self._generated = 0

    async def _deltas(self) -> AsyncGenerator[TextDelta | Finished | _Done, None]:
        events = self._opened.events
        try:
            async for event in events:
                now = time.perf_counter()
                self._first = self._first or now
                if isinstance(event, Finished):
                    yield event
                    return
                if isinstance(event, TextDelta):
                    self._text += event.text
                    self._generated += max(1, len(event.logprobs))
                    yield event
                    if self._limit is not None and now - self._first > self._limit \
                            and "\n" in self._text:
                        break
        finally:
            await _close(events)
        yield _Done()

    def _result(self, content: str, finished: Finished | _Done | None) -> s.InfillResult:
        if finished is None:
            return s.InfillResult(content=content, stop=False, model=self._model)
        if isinstance(finished, Finished):
            predicted = finished.usage.completion_tokens
            kind, word = convert.stop_type(finished), finished.stop_sequence or ""
        else:
            predicted, kind, word = self._generated, "limit", ""
        started = self._opened.started
        return s.InfillResult(
            content=content, stop=True, model=self._model, tokens_predicted=predicted,
            tokens_evaluated=started.prompt_tokens, tokens_cached=started.cached_tokens,
            has_new_line="\n" in self._text, stop_type=kind, stopping_word=word,
            timings=self._timings(started.prompt_tokens - started.cached_tokens, predicted))

    def _timings(self, evaluated: int, predicted: int) -> s.Timings:
        first = self._first or time.perf_counter()
        prompt_ms = (first - self._began) * 1000
        predicted_ms = (time.perf_counter() - first) * 1000
        return s.Timings(
            prompt_n=evaluated, prompt_ms=prompt_ms,
            prompt_per_token_ms=prompt_ms / max(evaluated, 1),
            prompt_per_second=evaluated / max(prompt_ms / 1000, 1e-9),
            predicted_n=predicted, predicted_ms=predicted_ms,
            predicted_per_token_ms=predicted_ms / max(predicted, 1),
            predicted_per_second=predicted / max(predicted_ms / 1000, 1e-9))

    async def result(self) -> s.InfillResult:
        async with contextlib.aclosing(self._deltas()) as items:
            async for item in items:
                if not isinstance(item, TextDelta):
                    return self._result(self._text, item)
        raise EngineError("the engine ended the stream without finishing")

    async def chunks(self, fields: list[str] | None) -> AsyncIterator[str]:
        try:
            async with contextlib.aclosing(self._deltas()) as items:
                async for item in items:
                    result = self._result(item.text, None) if isinstance(item, TextDelta) \
                        else self._result("", item)
                    yield sse.data(json.dumps(result.selected(fields)))
        except MlxjanError as err:
            log.warning("infill stream failed: %s", err.message)
            yield sse.data(error_json(err, "openai"))
