"""How many decoding answers to put in one llama.cpp step: the size that gives the most
tokens per second, learned from the steps as they run.

llama.cpp's CPU kernels do not make a bigger batch cheaper per token at every size, and
which sizes pay differs from CPU to CPU: on a two-core AVX-512 machine a step of 2 tokens
took 2.4x as long as a step of 1 (worse than decoding the two answers in turn), 4 tokens
3.3x, 8 tokens 4.8x; on a two-core Zen 3 (AVX2, repacked weights, which are multiplied four
columns at a time) 2 tokens took 2.1x, 3 tokens 3.3x and 4 tokens 2.7x. So the batch
decodes its answers in groups of the size measured best, on this machine and under its
current load, for how many are decoding, taking turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Weight of the newest step in a size's running mean: smooths out a machine shared with
# other work, and still follows it when the load changes.
SMOOTHING = 0.2
# A size not measured for this many steps is measured again (the load may have changed).
STALE_STEPS = 200


@dataclass
class Pace:
    _seconds: dict[int, float] = field(default_factory=dict)  # mean step time by size
    _measured: dict[int, int] = field(default_factory=dict)  # step count when last measured
    _steps: int = 0

    def group(self, decoding: int) -> int:
        """How many of `decoding` answers the next step should advance."""
        self._steps += 1
        if decoding <= 1:
            return decoding
        sizes = range(decoding, 0, -1)
        stale = [n for n in sizes if self._steps - self._measured.get(n, -STALE_STEPS)
                 >= STALE_STEPS]
        if stale:
            return stale[0]  # measure it (the largest first: the likeliest best)
        return max(sizes, key=lambda n: n / self._seconds[n])

    def record(self, size: int, seconds: float) -> None:
        """A step that advanced `size` decoding answers (and no prompt) took `seconds`."""
        mean = self._seconds.get(size)
        self._seconds[size] = seconds if mean is None else (
            SMOOTHING * seconds + (1 - SMOOTHING) * mean)
        self._measured[size] = self._steps

    def rates(self) -> dict[int, float]:
        """Tokens per second by group size, as measured so far."""
        return {n: round(n / s, 1) for n, s in sorted(self._seconds.items())}
