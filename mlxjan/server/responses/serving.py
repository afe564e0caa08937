"""The Responses API: the same generation path as chat completions, OpenAI's response
objects and event stream, and the stored responses that `previous_response_id`, GET, DELETE,
input_items and cancel read."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import TypeAdapter
from starlette.responses import Response

from mlxjan.engine.manager import EngineManager
from mlxjan.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    MlxjanError,
    NotFoundError,
    ResponseStoreError,
)
from mlxjan.server import sse
from mlxjan.server.events import KeepAlive, OpenedStream, open_on, with_keepalive
from mlxjan.server.keep_alive import requested
from mlxjan.server.responses import convert
from mlxjan.server.responses import schemas as s
from mlxjan.server.responses.store import ResponseStore, StoredResponse
from mlxjan.server.responses.stream import ResponseStream, Seal, item_id
from mlxjan.server.signing import Signer
from mlxjan.settings import Settings
from mlxjan.types import Finished, GenerationRequest

log = logging.getLogger(__name__)
ITEMS = TypeAdapter(list[s.InputItem])
ENCRYPTED = "reasoning.encrypted_content"
T = TypeVar("T")


@dataclass(frozen=True)
class _Planned:
    """A create request, converted: what to run, and how its response goes out."""

    request: GenerationRequest
    prompt: convert.Prompt
    items: list[s.InputItem]  # this request's input, each with an id
    history: list[s.InputItem]  # the stored conversation it continues
    machine: ResponseStream
    keep_alive: float | None


class ResponsesServing:
    def __init__(self, manager: EngineManager, settings: Settings, signer: Signer,
                 store: ResponseStore) -> None:
        self._manager = manager
        self._settings = settings
        self._signer = signer
        self._store = store
        self._background: dict[str, asyncio.Task[None]] = {}

    async def create(self, body: s.ResponsesRequest, keep_alive_header: str | None = None
                     ) -> Response:
        if body.background and not body.store:
            raise InvalidRequestError("background responses must be stored: set store to "
                                      "true.", param="background")
        if body.background and body.stream:
            raise InvalidRequestError("a background response cannot be streamed here: poll "
                                      "GET /v1/responses/{id} instead.", param="stream")
        planned = await self._plan(body, keep_alive_header)
        if body.background:
            await self._save(planned)
            self._background[planned.machine.response.id] = asyncio.create_task(
                self._run_in_background(planned, body.truncation))
            return _json(planned.machine.response)
        opened = await self._open(planned, body.truncation)
        if body.stream:
            return StreamingResponse(self._sse(planned, opened), media_type="text/event-stream",
                                     headers=sse.HEADERS)
        await self._drain(planned.machine, opened)
        await self._save(planned)
        return _json(planned.machine.response)

    async def _plan(self, body: s.ResponsesRequest, keep_alive_header: str | None) -> _Planned:
        history = await self._history(body.previous_response_id)
        items = [_stored_form(item) for item in convert.input_items(body.input)]
        prompt = _prompt(body, [*history, *items])
        request = convert.to_generation_request(
            body.model, prompt, self._decrypt(body.model),
            convert.sampling(body, self._settings.sampling_defaults()),
            self._settings.reasoning_budget)
        summary = bool(body.reasoning and body.reasoning.summary)
        seal = self._seal(body.model) if ENCRYPTED in (body.include or ()) else None
        machine = ResponseStream(_created(body), summary=summary, seal=seal)
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        return _Planned(request, prompt, items, history, machine, keep_alive)

    async def _history(self, previous_id: str | None) -> list[s.InputItem]:
        """The conversation a response continues: its history, input and output."""
        if previous_id is None:
            return []
        stored = await _in_store(self._store.get, previous_id)
        if stored is None:
            raise NotFoundError(f"No stored response with id '{previous_id}'.",
                                param="previous_response_id")
        output = s.ResponseOut.model_validate_json(stored.response_json).output
        return [*ITEMS.validate_json(stored.history_json), *ITEMS.validate_json(
            stored.input_json), *ITEMS.validate_python([o.model_dump() for o in output])]

    async def _open(self, planned: _Planned, truncation: str | None) -> OpenedStream:
        """Start generation; with truncation "auto", drop the oldest items until the prompt
        fits (a quarter at a time: each try renders and tokenizes it again)."""
        request, items = planned.request, list(planned.prompt.items)
        while True:
            try:
                return await open_on(self._manager, request, planned.keep_alive,
                                     self._settings.request_timeout)
            except ContextLengthExceededError:
                if truncation != "auto" or len(items) <= 1:
                    raise
                items = _after_orphans(items[max(1, len(items) // 4):])
                log.info("truncation auto: the prompt is too long, %d items kept", len(items))
                request = replace(request, messages=convert.messages(
                    planned.prompt.instructions, items, self._decrypt(request.model)))

    async def _drain(self, machine: ResponseStream, opened: OpenedStream) -> None:
        """The same events as a stream, fed to the machine: its response is the result."""
        machine.start()
        async for event in opened.events:
            if isinstance(event, Finished):
                machine.finish(event)
            else:
                machine.on_delta(event)

    async def _sse(self, planned: _Planned, opened: OpenedStream) -> AsyncIterator[str]:
        machine = planned.machine
        for out in machine.start():
            yield _frame(out)
        try:
            async for event in with_keepalive(opened.events, self._settings.keepalive_interval):
                if isinstance(event, KeepAlive):
                    yield sse.comment()
                    continue
                batch = (machine.finish(event) if isinstance(event, Finished)
                         else machine.on_delta(event))
                for out in batch:
                    yield _frame(out)
            if not machine.ended:
                raise EngineError("the engine ended the stream without finishing")
        except MlxjanError as err:
            # The 200 has been sent: the error ends the stream as response.failed.
            log.warning("response %s failed: %s", machine.response.id, err.message)
            for out in machine.fail(err):
                yield _frame(out)
        await self._save(planned)

    async def _run_in_background(self, planned: _Planned, truncation: str | None) -> None:
        machine = planned.machine
        machine.response.status = "in_progress"
        try:
            await self._drain(machine, await self._open(planned, truncation))
        except asyncio.CancelledError:
            machine.cancel()
            raise
        except MlxjanError as err:
            log.warning("background response %s failed: %s", machine.response.id, err.message)
            machine.fail(err)
        finally:
            self._background.pop(machine.response.id, None)
            await self._save(planned)

    async def _save(self, planned: _Planned) -> None:
        response = planned.machine.response
        if not response.store:
            return
        stored = StoredResponse(
            id=response.id, created_at=response.created_at, model=response.model,
            status=response.status, response_json=response.model_dump_json(by_alias=True),
            input_json=ITEMS.dump_json(planned.items, by_alias=True).decode(),
            history_json=ITEMS.dump_json(planned.history, by_alias=True).decode())
        try:
            await _in_store(self._store.put, stored)
        except ResponseStoreError as err:  # the answer itself went out: log, do not fail it
            log.error("response %s was not stored: %s", response.id, err.message)

    # --- stored responses ----------------------------------------------------------------

    async def get(self, response_id: str) -> s.ResponseOut:
        stored = await self._stored(response_id)
        response = s.ResponseOut.model_validate_json(stored.response_json)
        if response.status in ("queued", "in_progress") and \
                response_id not in self._background:
            # Stored while running by a server that has stopped since.
            response.status = "failed"
            response.error = s.ErrorOut(code="server_error", message="The server stopped "
                                        "before this response finished.")
        return response

    async def delete(self, response_id: str) -> s.DeletedOut:
        task = self._background.get(response_id)
        if task is not None:  # ended first, so that it does not store itself again
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not await _in_store(self._store.delete, response_id):
            raise _unknown(response_id)
        return s.DeletedOut(id=response_id)

    async def cancel(self, response_id: str) -> s.ResponseOut:
        response = await self.get(response_id)
        if not response.background:
            raise InvalidRequestError("Only background responses can be cancelled.",
                                      param="response_id")
        task = self._background.get(response_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            response = await self.get(response_id)
        return response

    async def input_items(self, response_id: str, limit: int, order: str,
                          after: str | None) -> s.InputItemList:
        stored = await self._stored(response_id)
        items = ITEMS.validate_json(stored.input_json)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.id for item in items]
            if after not in ids:
                raise NotFoundError(f"No input item with id '{after}' in response "
                                    f"'{response_id}'.", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return s.InputItemList(data=page, first_id=page[0].id if page else None,
                               last_id=page[-1].id if page else None,
                               has_more=len(items) > limit)

    async def input_tokens(self, body: s.InputTokensRequest,
                           keep_alive_header: str | None = None) -> s.InputTokensOut:
        history = await self._history(body.previous_response_id)
        prompt = _prompt(body, [*history, *convert.input_items(body.input)])
        request = convert.to_generation_request(body.model, prompt, self._decrypt(body.model))
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        async with await self._manager.use(body.model, keep_alive) as engine:
            return s.InputTokensOut(input_tokens=await engine.count_tokens(request))

    async def aclose(self) -> None:
        """Cancel the background responses still running (they are stored as cancelled)."""
        tasks = list(self._background.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self._store.close)

    async def _stored(self, response_id: str) -> StoredResponse:
        stored = await _in_store(self._store.get, response_id)
        if stored is None:
            raise _unknown(response_id)
        return stored

    def _decrypt(self, model: str) -> convert.Decrypt:
        return lambda token: self._signer.decrypt(token, context=model)

    def _seal(self, model: str) -> Seal:
        return lambda text: self._signer.encrypt(text, context=model)


async def _in_store(call: Callable[[str], T] | Callable[[StoredResponse], T],
                    argument: object) -> T:
    """A store call, off the event loop (SQLite blocks), its failures typed."""
    try:
        return await asyncio.to_thread(call, argument)  # type: ignore[arg-type]
    except (sqlite3.Error, OSError) as exc:
        raise ResponseStoreError(f"the stored responses database failed: {exc}") from exc


def _unknown(response_id: str) -> NotFoundError:
    return NotFoundError(f"No stored response with id '{response_id}'.", param="response_id")


def _prompt(body: s.InputTokensRequest, items: Sequence[s.InputItem]
            ) -> convert.Prompt:
    return convert.Prompt(instructions=body.instructions, items=items, tools=body.tools or [],
                          tool_choice=body.tool_choice,
                          parallel_tool_calls=body.parallel_tool_calls, text=body.text,
                          reasoning=body.reasoning)


def _created(body: s.ResponsesRequest) -> s.ResponseOut:
    """The response as created: the request's settings echoed, no output yet."""
    reasoning = body.reasoning or s.ReasoningConfig()
    return s.ResponseOut(
        id=item_id("resp"), created_at=int(time.time()),
        status="queued" if body.background else "in_progress", model=body.model,
        instructions=body.instructions, max_output_tokens=body.max_output_tokens,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        reasoning=s.ReasoningConfigOut(effort=reasoning.effort, summary=reasoning.summary),
        store=body.store, background=body.background, temperature=body.temperature,
        top_p=body.top_p, text=body.text or s.TextConfig(),
        tool_choice=body.tool_choice or "auto", tools=body.tools or [],
        truncation=body.truncation or "disabled", user=body.user,
        metadata=body.metadata or {}, prompt_cache_key=body.prompt_cache_key)


def _stored_form(item: s.InputItem) -> s.InputItem:
    """An input item as stored and listed: with an id, a message's text as a content part
    (as OpenAI lists them)."""
    update: dict[str, object] = {}
    if not item.id:
        update["id"] = item_id({"message": "msg", "function_call": "fc",
                                "function_call_output": "fco", "reasoning": "rs"}[item.type])
    if isinstance(item, s.MessageItem) and isinstance(item.content, str):
        update["content"] = [s.OutputText(type="output_text", text=item.content)
                             if item.role == "assistant"
                             else s.InputText(type="input_text", text=item.content)]
    return item.model_copy(update=update)


def _after_orphans(items: list[s.InputItem]) -> list[s.InputItem]:
    """Drop the tool results left at the start by a truncation: their calls are gone."""
    while items and isinstance(items[0], s.FunctionCallOutputItem):
        items = items[1:]
    return items


def _frame(event: s.StreamEvent) -> str:
    return sse.named(event.type, event.model_dump_json(by_alias=True))


def _json(response: s.ResponseOut) -> JSONResponse:
    return JSONResponse(response.model_dump(mode="json", by_alias=True))
