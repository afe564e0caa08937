"""OpenAI chat completions: one generation path, streamed as SSE or drained into JSON."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from mlxjan.engine.manager import EngineManager
from mlxjan.errors import MlxjanError
from mlxjan.server import sse
from mlxjan.server.errors import error_json
from mlxjan.server.events import KeepAlive, OpenedStream, drain, open_on, with_keepalive
from mlxjan.server.keep_alive import requested
from mlxjan.server.openai import convert
from mlxjan.server.openai import schemas as s
from mlxjan.settings import Settings
from mlxjan.types import Finished, ModelInfo

log = logging.getLogger(__name__)


class ChatServing:
    def __init__(self, manager: EngineManager, settings: Settings) -> None:
        self._manager = manager
        self._settings = settings

    async def create(self, body: s.ChatCompletionRequest, keep_alive_header: str | None = None
                     ) -> Response:
        request = convert.to_generation_request(body, self._settings.sampling_defaults(),
                                                self._settings.reasoning_budget)
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        opened = await open_on(self._manager, request, keep_alive,
                               self._settings.request_timeout)
        ids = convert.CompletionIds(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()),
                                    body.model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _sse_chunks(ids, opened, include_usage, body.logprobs,
                            self._settings.keepalive_interval, self._settings.reasoning_field),
                media_type="text/event-stream", headers=sse.HEADERS)
        deltas, finished = await drain(opened.events)
        result = convert.completion(ids, deltas, finished, body.logprobs,
                                    self._settings.reasoning_field)
        return JSONResponse(result.model_dump(mode="json"))

    def models(self, loaded_only: bool = False) -> s.ModelList:
        return s.ModelList(data=[_card(m) for m in self._manager.list_models()
                                 if m.loaded or not loaded_only])

    def model(self, model_id: str) -> s.ModelCard:
        return _card(self._manager.get_model(model_id))


def _card(m: ModelInfo) -> s.ModelCard:
    return s.ModelCard(id=m.id, created=m.created, owned_by=m.owned_by, kind=m.kind,
                       loaded=m.loaded,
                       memory_bytes=m.memory_bytes,
                       expires_at=int(m.expires_at) if m.expires_at is not None else None)


async def _sse_chunks(ids: convert.CompletionIds, opened: OpenedStream, include_usage: bool,
                      with_logprobs: bool, keepalive: float, field: convert.ReasoningField
                      ) -> AsyncIterator[str]:
    yield sse.data(convert.role_chunk(ids))
    try:
        async for event in with_keepalive(opened.events, keepalive):
            if isinstance(event, KeepAlive):
                yield sse.comment()
            elif isinstance(event, Finished):
                yield sse.data(convert.finish_chunk(ids, event))
                if include_usage:
                    yield sse.data(convert.usage_chunk(ids, event.usage))
            else:
                yield sse.data(convert.delta_chunk(ids, event, with_logprobs, field))
    except MlxjanError as err:
        # The 200 has been sent: the error goes out in-band, then the stream ends.
        log.warning("stream %s failed: %s", ids.id, err.message)
        yield sse.data(error_json(err, "openai"))
        return
    yield sse.DONE
