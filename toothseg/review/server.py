"""`toothseg review SOURCE`: serve the review page for a run's worklist, a worklist file or a predict folder."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from toothseg.errors import ConfigError
from toothseg.review.items import resolve_source
from toothseg.review.session import Session

log = logging.getLogger("toothseg")


def open_session(source: str | Path, out: str | Path | None = None, user: str | None = None) -> Session:
    """The review session for ``source`` (run folder, worklist.json/.csv, or `toothseg predict` output folder).

    ``out``: the reviewed dataset folder (default: ``reviewed/`` beside the worklist, or in the predict folder).
    """
    items, meta, default_out = resolve_source(source)
    return Session(items, out if out is not None else default_out, meta=meta, user=user)


def review(source: str | Path, port: int = 8765, host: str = "127.0.0.1", out: str | Path | None = None,
           user: str | None = None) -> dict:
    """Start the review server and block until it is stopped (Ctrl+C); returns the decisions made."""
    import uvicorn

    from toothseg.review.app import create_app

    if not 0 < int(port) < 65536:
        raise ConfigError(f"--port {port} must be in 1..65535")
    session = open_session(source, out, user)
    url = f"http://{host}:{port}/"
    log.info("review: %d images; accepted masks go to %s (a toothseg dataset: images/ + masks/)",
             len(session.items), session.out)
    log.info("review: open %s in a browser (Ctrl+C stops the server)", url)
    try:
        uvicorn.run(create_app(session), host=host, port=int(port), log_level="warning")
    except KeyboardInterrupt:  # Ctrl+C is how a review ends; every decision is already on disk
        pass
    counts = Counter(rec["decision"] for rec in session.state.values())
    return {"out": str(session.out), "decisions": dict(counts), "url": url}
