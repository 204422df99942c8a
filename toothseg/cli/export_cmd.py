"""`toothseg export BUNDLE --format onnx`: ONNX graphs for ONNX Runtime (`predict --engine onnxruntime`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        bundle: Path = typer.Argument(..., help="bundle folder (RUN/bundle) or a run folder"),
        format: str = typer.Option("onnx", "--format", "-f", help="export format (onnx)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default: BUNDLE/onnx)"),
        opset: int = typer.Option(17, min=13, help="ONNX opset"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing export"),
        threads: Optional[int] = typer.Option(None, min=1, help="threads for the parity check (default: all cores)"),
    ) -> None:
        """Export every bundle member to ONNX and check it against PyTorch."""
        from toothseg.api import export
        from toothseg.run.folder import setup_logging

        setup_logging()
        paths = export(bundle, format=format, out=out, opset=opset, overwrite=overwrite, threads=threads)
        typer.echo(f"exported {len(paths)} model(s) to {paths[0].parent if paths else out}")
