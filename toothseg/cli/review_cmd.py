"""`toothseg review SOURCE [--port 8765]`: the local page to check, correct and accept masks."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("review")
    def review_cmd(
        source: Path = typer.Argument(..., help="run folder (its suggest worklist), a worklist.json, or a "
                                      "'toothseg predict' output folder"),
        port: int = typer.Option(8765, "--port", help="port to serve on"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
        out: Path | None = typer.Option(None, "--out", "-o", help="new dataset folder for accepted masks "
                                        "(default: reviewed/ beside the worklist)"),
        user: str | None = typer.Option(None, "--user", help="reviewer name in the record (default: OS user)"),
    ) -> None:
        """Serve a page with the X-ray, the predicted mask, brush/eraser, undo, zoom and accept/reject/skip."""
        from toothseg.api import review
        from toothseg.run.folder import setup_logging

        setup_logging()
        s = review(source, port=port, host=host, out=out, user=user)
        typer.echo(f"decisions: {s['decisions'] or 'none'}; reviewed dataset: {s['out']} "
                   f"(add it to 'toothseg prepare' / 'toothseg run' as one more source)")
