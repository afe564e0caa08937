"""Group sizes for llama.cpp decode steps, chosen by measured tokens per second."""

from __future__ import annotations

from mlxjan.engine.llamacpp.pace import STALE_STEPS, Pace


def _measure(pace: Pace, decoding: int, seconds: dict[int, float]) -> list[int]:
    chosen = []
    for _ in range(decoding):
        size = pace.group(decoding)
        pace.record(size, seconds[size])
        chosen.append(size)
    return chosen


def test_each_size_is_measured_once_largest_first_then_the_fastest_is_kept() -> None:
    pace = Pace()
    # Two tokens per step cost more than two steps of one (as on a two-core CPU).
    seconds = {1: 0.016, 2: 0.039, 3: 0.05, 4: 0.054}
    assert _measure(pace, 4, seconds) == [4, 3, 2, 1]
    assert pace.group(4) == 4  # 74 tokens/s against 62 for one at a time
    assert pace.group(2) == 1  # two at once would be slower than taking turns
    assert pace.rates()[1] == 62.5


def test_a_size_is_measured_again_once_stale() -> None:
    pace = Pace()
    _measure(pace, 2, {1: 0.016, 2: 0.039})
    for _ in range(STALE_STEPS - 2):
        assert pace.group(2) == 1
        pace.record(1, 0.016)
    assert pace.group(2) == 2


def test_one_answer_is_never_grouped() -> None:
    assert Pace().group(1) == 1 and Pace().group(0) == 0
