"""`toothseg check DATA... [--csv FILE]`: list unreadable files, size mismatches, orphans and odd masks."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check_cmd(
        data: list[Path] = typer.Argument(..., help="dataset folders (images/+masks/[+unlabelled/] or nnU-Net raw)"),
        csv: Path | None = typer.Option(None, "--csv", help="write every finding to this CSV file"),
        all_rows: bool = typer.Option(False, "--all", help="print every info row, not only the first 10"),
        workers: int = typer.Option(1, "--workers", min=1, help="processes reading files in parallel"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --csv file"),
    ) -> None:
        """Read every image and mask and report problems; exit code 1 when there are errors."""
        from toothseg.api import check

        report = check(list(data), csv_path=csv, workers=workers, overwrite=overwrite)
        typer.echo(report.table(max_info=None if all_rows else 10))
        if csv is not None:
            typer.echo(f"findings written to {csv}")
        if not report.ok:
            raise typer.Exit(1)
