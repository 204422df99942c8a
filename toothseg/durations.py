"""Time budgets given as ``HH:MM:SS``: one parser, so every verb accepts and refuses the same strings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from toothseg.errors import ConfigError


def parse_hhmmss(text: str, what: str = "max_time") -> int:
    """Seconds in ``HH:MM:SS`` (minutes and seconds below 60); a `ConfigError` line otherwise."""
    parts = str(text).strip().split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or int(parts[1]) >= 60 or int(parts[2]) >= 60:
        raise ConfigError(f"{what} '{text}' must be HH:MM:SS with minutes and seconds under 60 (e.g. 00:30:00)")
    h, m, s = (int(p) for p in parts)
    if h * 3600 + m * 60 + s <= 0:
        raise ConfigError(f"{what} '{text}' must be longer than zero (e.g. 00:30:00)")
    return h * 3600 + m * 60 + s


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block took as ``timings[name]`` (stage timings of `run` and `demo`)."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def format_hhmmss(seconds: int) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
