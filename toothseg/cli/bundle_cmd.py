"""`toothseg bundle RUN [--members TAG,TAG] [--zip]`: rebuild a run's bundle from chosen model families."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("bundle")
    def bundle_cmd(
        run: Path = typer.Argument(..., help="run folder with trained model families under train/"),
        members: Optional[str] = typer.Option(None, "--members", help="train/<tag> families to fuse, e.g. "
                                              "TAG,TAG (default: the config's models and their students)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="bundle folder (default: RUN/bundle)"),
        zip: bool = typer.Option(False, "--zip", help="also write BUNDLE.zip"),
    ) -> None:
        """Fuse trained model families into a bundle: weights, OOF-tuned threshold and post-processing."""
        from toothseg.api import bundle
        from toothseg.run.folder import setup_logging

        setup_logging()
        tags = [t.strip() for t in members.split(",") if t.strip()] if members is not None else None
        path = bundle(run, out=out, zip=zip, members=tags)
        typer.echo(f"bundle: {path}")
