"""Checks every verb runs before expensive work (loading models, curating, training), each a one-line error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from toothseg.errors import InputError


def ensure_writable_dir(path: str | Path, what: str = "--out") -> Path:
    """Create ``path`` if needed and prove a file can be written there (permissions, read-only mounts, a file in
    the way), so a long job never fails at its first write."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(p, f"{what} is a file, not a folder", f"pass a folder for {what}")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".toothseg-probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(p, f"{what} folder is not writable ({exc.strerror or exc.__class__.__name__})",
                         f"choose a folder you can write to for {what}") from None
    return p
