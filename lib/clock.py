"""The wall clock in milliseconds, as every Redis score and Lua script takes it (ARGV)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch (wall clock: leases and scores are shared by processes)."""
    return int(time.time() * 1000)
