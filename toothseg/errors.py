"""User-facing errors: one line, naming the file and the fix; the CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class ToothsegError(Exception):
    """An error caused by the user's input or configuration, not by a bug."""


class InputError(ToothsegError):
    """A file the user gave cannot be used as it is."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}; {fix}")


class ConfigError(ToothsegError):
    """A configuration value is missing or invalid."""


def first_line(exc: BaseException, limit: int | None = None, default: str = "") -> str:
    """The first line of ``exc``'s message (cut to ``limit`` characters), or ``default`` when it has none: a
    library's multi-line message fits our one-line errors, and an empty one cannot raise IndexError."""
    lines = str(exc).splitlines()
    return lines[0][:limit] if lines else default
