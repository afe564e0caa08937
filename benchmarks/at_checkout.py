"""`python -m benchmarks.at_checkout DIR ARGS...`: `python -m mlxjan ARGS...` as another
checkout of mlxjan (DIR, e.g. a `git worktree` of an earlier commit) has it, so a benchmark
can run that commit beside this one. Python puts the working directory first on the module
path for `-m`, ahead of this checkout's editable install."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.chdir(sys.argv[1])
    os.execv(sys.executable, [sys.executable, "-m", "mlxjan", *sys.argv[2:]])
