"""`toothseg predict BUNDLE INPUT... --out DIR`: masks, overlays, probability maps and JSON records."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toothseg.errors import ConfigError
from toothseg.folds_arg import parse_folds


def _folds(value: Optional[str]) -> Optional[list[int]]:
    try:
        return parse_folds(value)
    except ConfigError as exc:  # a usage error (exit 2) before anything loads
        raise typer.BadParameter(str(exc)) from None


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        bundle: Path = typer.Argument(..., help="bundle folder (RUN/bundle), a run folder, or a bundle .zip"),
        inputs: list[str] = typer.Argument(..., help="image files, folders (searched recursively) or globs"),
        out: Path = typer.Option(..., "--out", "-o", help="output folder"),
        engine: str = typer.Option("torch", help="torch or onnxruntime (needs 'toothseg export' first)"),
        folds: Optional[str] = typer.Option(None, help="use only these folds, e.g. 0 or 0,2 (faster); default all"),
        tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="test-time augmentation (default: bundle's)"),
        threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="override the OOF-tuned threshold"),
        min_component: Optional[int] = typer.Option(None, min=0, help="drop blobs under N pixels (default: bundle's)"),
        fill_holes: Optional[bool] = typer.Option(None, "--fill-holes/--no-fill-holes",
                                                  help="fill holes in teeth (default: bundle's)"),
        save_prob: bool = typer.Option(False, "--save-prob", help="also write probability maps (x255 PNG)"),
        overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="write overlay PNGs"),
        overwrite: bool = typer.Option(False, "--overwrite", help="redo done images; replace same-name files"),
        batch_size: Optional[int] = typer.Option(None, min=1, help="images per forward pass (default: bundle's)"),
        workers: Optional[int] = typer.Option(None, min=1, help="reader threads (default: min(4, cores))"),
        threads: Optional[int] = typer.Option(None, min=1, help="compute threads (default: all cores)"),
    ) -> None:
        """Segment teeth in X-rays with a trained bundle (fold/model/scale fusion, TTA, tuned threshold)."""
        from toothseg.api import predict
        from toothseg.run.folder import setup_logging

        setup_logging()
        s = predict(bundle, inputs, out, engine=engine, folds=_folds(folds), tta=tta, threshold=threshold,
                    min_component=min_component, fill_holes=fill_holes, save_prob=save_prob, overlay=overlay,
                    overwrite=overwrite, batch_size=batch_size, workers=workers, threads=threads)
        typer.echo(f"{s.n_ok} predicted, {s.n_skipped} skipped (outputs exist), {s.n_failed} failed "
                   f"in {s.seconds:.1f} s ({s.images_per_s or 0:.2f} images/s, {s.n_members} member(s), "
                   f"{s.engine}, threshold {s.threshold:.2f}) -> {s.out}")
        if s.n_failed:
            typer.echo(f"{s.n_failed} input(s) failed; see {s.summary_csv}", err=True)
            raise typer.Exit(1)
