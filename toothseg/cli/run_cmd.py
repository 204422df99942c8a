"""`toothseg run DATA... --out RUN --preset P`: the whole pipeline in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        data: list[Path] = typer.Argument(..., help="dataset folders (images/+masks/[+unlabelled/] or nnU-Net raw)"),
        out: Path = typer.Option(..., "--out", "-o", help="run folder to write"),
        preset: str = typer.Option("cpu", "--preset", help="config preset: recipe, cpu or tiny"),
        config: Path | None = typer.Option(None, "--config", help="YAML config layered on the preset"),
        override: list[str] = typer.Option([], "--set", help="config override section.key=value (repeatable)"),
        fold: str = typer.Option("all", "--fold", help="fold number or 'all'"),
        max_time: str | None = typer.Option(None, "--max-time", help="wall-clock budget per model, HH:MM:SS"),
        resume: bool = typer.Option(False, "--resume", help="continue an interrupted run"),
        overwrite: bool = typer.Option(False, "--overwrite", help="redo every stage"),
    ) -> None:
        """Prepare -> train (-> pseudo-label -> retrain where available) on DATA into RUN."""
        from toothseg.api import run as run_pipeline

        s = run_pipeline(list(data), out, preset=preset, config=config, overrides=list(override), fold=fold,
                         max_time=max_time, resume=resume, overwrite=overwrite)
        for tag, info in s.train.get("models", {}).items():
            typer.echo(f"{tag}: CV Dice {info['cv_dice']:.4f}  IoU {info['cv_iou']:.4f}  HD95 {info['cv_hd95']:.1f} px")
        times = ", ".join(f"{k} {v:.0f}s" for k, v in s.timings_s.items())
        typer.echo(f"run folder: {s.run}  ({times})")
