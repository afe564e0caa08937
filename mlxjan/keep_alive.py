"""How long a model stays loaded after its last request, with Ollama's semantics.

A number is seconds; a string is a number of seconds or a Go-style duration ("5m", "1h30m",
"90s", "1.5h", "300ms"). Zero unloads the model as soon as its requests end; a negative value
keeps it loaded until it is unloaded by hand or evicted for room. `None` stands for "forever".
"""

from __future__ import annotations

import math
import re

from mlxjan.errors import InvalidRequestError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+")


def parse_keep_alive(value: str | int | float) -> float | None:
    """Seconds to stay loaded after the last request, or None to stay until unloaded."""
    if isinstance(value, bool):
        raise InvalidRequestError("keep_alive must be a duration or a number of seconds",
                                  param="keep_alive")
    if isinstance(value, (int, float)):
        return _seconds(float(value))
    text = value.strip()
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    try:
        return _seconds(sign * float(body))
    except ValueError:
        pass
    if not _DURATION.fullmatch(body):
        raise InvalidRequestError(
            f"keep_alive {value!r} is not a duration: use seconds (300), a duration such as "
            "'5m' or '1h30m', 0 to unload after the request, or -1 to keep the model loaded",
            param="keep_alive")
    total = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(body))
    return _seconds(sign * total)


def _seconds(value: float) -> float | None:
    if math.isnan(value):
        raise ValueError("NaN")
    return None if value < 0 or math.isinf(value) else value


def describe(seconds: float | None) -> str:
    """A keep-alive in words, for logs and `mlxjan ps`."""
    if seconds is None:
        return "forever"
    if seconds == 0:
        return "unload when idle"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
