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
