"""Every way a streamed text may arrive, for the splitters' tests: whole, a character at a
time, cut at every point (and, when short, at every pair of points), and in random pieces."""

from __future__ import annotations

import random
from collections.abc import Iterator


def chunkings(text: str) -> Iterator[list[str]]:
    yield [text]
    yield list(text)
    yield ["", text, ""]
    for seed in range(20):
        rng = random.Random(seed)
        chunks, pos = [], 0
        while pos < len(text):
            size = rng.randint(1, 8)
            chunks.append(text[pos:pos + size])
            pos += size
        yield chunks
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]
    if len(text) <= 60:
        for i in range(len(text) + 1):
            for j in range(i, len(text) + 1):
                yield [text[:i], text[i:j], text[j:]]
