"""Anthropic Messages: the same generation path as OpenAI, another framing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from mlxjan.engine.manager import EngineManager
from mlxjan.errors import MlxjanError
from mlxjan.server import sse
from mlxjan.server.anthropic import convert
from mlxjan.server.anthropic import schemas as s
from mlxjan.server.anthropic.stream import MessageStream
from mlxjan.server.errors import error_json
from mlxjan.server.events import KeepAlive, OpenedStream, drain, open_on, with_keepalive
from mlxjan.server.keep_alive import requested
from mlxjan.server.signing import Signer
from mlxjan.settings import Settings
from mlxjan.types import Finished

log = logging.getLogger(__name__)


class MessagesServing:
    def __init__(self, manager: EngineManager, settings: Settings, signer: Signer) -> None:
        """`signer` seals the thinking blocks sent out and checks those sent back."""
        self._manager = manager
        self._settings = settings
        self._signer = signer

    def _model_id(self, name: str) -> str:
        installed = (m.id for m in self._manager.list_models())
        return convert.resolve_model(name, self._settings, installed)

    async def create(self, body: s.MessagesRequest, keep_alive_header: str | None = None
                     ) -> Response:
        model_id = self._model_id(body.model)
        request = convert.to_generation_request(
            body, model_id, self._settings.sampling_defaults(), signer=self._signer,
            reasoning_budget=self._settings.reasoning_budget)
        thinking = convert.thinking_output(body.thinking, self._signer, model_id)
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        opened = await open_on(self._manager, request, keep_alive,
                               self._settings.request_timeout)
        message_id = f"msg_{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(
                _sse_events(MessageStream(message_id, body.model, thinking), opened,
                            self._settings.keepalive_interval),
                media_type="text/event-stream", headers=sse.HEADERS)
        deltas, finished = await drain(opened.events)
        result = convert.message(message_id, body.model, deltas, finished, thinking)
        return JSONResponse(result.model_dump(mode="json"))

    async def count_tokens(self, body: s.CountTokensRequest,
                           keep_alive_header: str | None = None) -> s.CountTokensOut:
        model_id = self._model_id(body.model)
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        async with await self._manager.use(model_id, keep_alive) as engine:
            count = await engine.count_tokens(convert.to_generation_request(
                body, model_id, signer=self._signer,
                reasoning_budget=self._settings.reasoning_budget))
        return s.CountTokensOut(input_tokens=count)

    def models(self, loaded_only: bool = False) -> s.ModelListOut:
        """Chat models only: the Messages API cannot use an embedding model."""
        data = [s.ModelOut(id=m.id, display_name=m.id, created_at=_rfc3339(m.created))
                for m in self._manager.list_models()
                if m.kind == "chat" and (m.loaded or not loaded_only)]
        return s.ModelListOut(data=data, first_id=data[0].id if data else None,
                              last_id=data[-1].id if data else None)


def _rfc3339(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


async def _sse_events(stream: MessageStream, opened: OpenedStream,
                      keepalive: float) -> AsyncIterator[str]:
    for name, payload in stream.start(opened.started):
        yield sse.named(name, payload)
    try:
        async for event in with_keepalive(opened.events, keepalive):
            if isinstance(event, KeepAlive):
                batch = [stream.ping()]
            elif isinstance(event, Finished):
                batch = stream.finish(event)
            else:
                batch = stream.on_delta(event)
            for name, payload in batch:
                yield sse.named(name, payload)
    except MlxjanError as err:
        # The 200 has been sent: the error goes out in-band as an `error` event.
        log.warning("stream %s failed: %s", opened.started, err.message)
        yield sse.named("error", error_json(err, "anthropic"))
