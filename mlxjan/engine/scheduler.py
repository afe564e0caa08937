"""Admission: how many requests the server holds at once, running or waiting.

Each engine decodes a bounded batch of answers on its thread (MLX up to max_batch_size,
llama.cpp up to 4 slots) and queues the rest; this bound keeps that queue from growing
without limit. Beyond it a request is refused at once with a typed
"overloaded" error (503 with Retry-After for OpenAI, 529 for Anthropic), never left hanging.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlxjan.errors import OverloadedError


@dataclass
class Admission:
    limit: int
    active: int = field(default=0)

    def enter(self) -> Ticket:
        if self.active >= self.limit:
            raise OverloadedError(f"The server is busy: {self.active} requests are running or "
                                  "waiting. Retry shortly.")
        self.active += 1
        return Ticket(self)


class Ticket:
    """One admitted request; `release` is idempotent (called when its stream closes)."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.active -= 1
            self._admission = None
