"""Facts about this machine's memory: how much there is, and how much a process holds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def total_memory() -> int:
    """Bytes of RAM (on Apple Silicon: the unified memory that GPU and CPU share)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int | None:
    """Bytes of memory available for new work (Linux: MemAvailable; elsewhere: total)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return total_memory()
    except (ValueError, OSError, AttributeError):
        return None


def process_rss(pid: int) -> int | None:
    """Bytes resident for process `pid` now, or None when it is gone or cannot be read."""
    if Path("/proc/self/statm").exists():  # Linux: resident pages are statm's second field
        try:
            pages = Path(f"/proc/{pid}/statm").read_text().split()[1]
            return int(pages) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return None
    try:  # macOS and other BSDs: ps reports kilobytes
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=5, check=False).stdout.strip()
        return int(out) * 1024 if out else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
