"""Fold arguments (``--fold``/``--folds``): one parser, so every verb and bench script reads them alike."""

from __future__ import annotations

from toothseg.errors import ConfigError


def parse_folds(text: str | int | None, what: str = "--folds") -> list[int] | None:
    """'0,2' -> [0, 2]; None/'all' -> None (every fold); anything else is one `ConfigError` line."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return None
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} '{text}': give fold numbers separated by commas (e.g. 0,1) or 'all'") from None
