"""`toothseg evaluate PRED_DIR GT_DIR`: per-image metrics and a summary of predicted masks."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        pred_dir: Path = typer.Argument(..., help="folder of predicted masks (PNG, 0/255 or 0/1), named by image stem"),
        gt_dir: Path = typer.Argument(..., help="dataset folder with masks/ (or labelsTr/), or a folder of masks"),
        out: Path | None = typer.Option(None, "--out", "-o", help="output folder [default: PRED_DIR/evaluation]"),
        tolerance: float = typer.Option(2.0, help="NSD tolerance in pixels (STS-2024: 2)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace existing metrics.csv / summary files"),
    ) -> None:
        """Score predictions against ground truth: Dice, IoU, HD, HD95, NSD and the STS-style score."""
        import toothseg.api as ts
        from toothseg.evaluate.evaluate import PROBLEMS

        s = ts.evaluate(pred_dir, gt_dir, out=out, tolerance=tolerance, overwrite=overwrite)
        m = s.metrics

        def ci(k: str) -> str:
            d = m[k]
            return f"{d['mean']:.4f} [{d['ci95'][0]:.4f}, {d['ci95'][1]:.4f}]" if d["mean"] is not None else "-"

        typer.echo(f"{s.n_images} images ({s.n_ok} scored, {s.n_failed} failures)")
        typer.echo(f"Dice {ci('dice')}  IoU {ci('iou')}  NSD@{s.tolerance_px:g}px {ci('nsd')}")
        typer.echo(f"HD95 {ci('hd95')} px  HD {ci('hd')} px  STS {ci('sts')}")
        for key, label in PROBLEMS.items():
            names = getattr(s, key)
            if names:
                more = f" ... (+{len(names) - 10})" if len(names) > 10 else ""
                typer.echo(f"warning: {len(names)} {label}: {', '.join(names[:10])}{more}", err=True)
        typer.echo(f"wrote {Path(s.outputs['metrics.csv']).parent}/{{metrics.csv,summary.json,summary.md}}")
