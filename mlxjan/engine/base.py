"""The Engine protocol: what serving code calls, whatever runs the model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from mlxjan.types import Event, GenerationRequest


class Engine(Protocol):
    """One loaded-on-demand model. Every method is safe to call from the event loop."""

    model_id: str

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Started, then TextDeltas, then exactly one Finished; raises MlxjanError."""
        ...

    async def count_tokens(self, request: GenerationRequest) -> int: ...

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    def health(self) -> dict[str, object]: ...

    async def aclose(self) -> None: ...
