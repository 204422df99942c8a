"""`toothseg report RUN`: one self-contained HTML page summarising a run folder."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run: Path = typer.Argument(..., help="run folder (from 'toothseg prepare' / 'toothseg run')"),
        out: Path | None = typer.Option(None, "--out", "-o", help="HTML file or folder [default: RUN/reports/report.html]"),
        worst: int = typer.Option(8, help="number of worst out-of-fold cases shown as overlays"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
    ) -> None:
        """Dataset and curation summary, CV table, training curves, histograms, per-source and worst cases."""
        import toothseg.api as ts

        path = ts.report(run, out=out, worst=worst, overwrite=overwrite)
        typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
