"""`toothseg demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Optional[Path] = typer.Option(None, "--out", help="new run folder (default runs/demo-<time>)"),
        labelled: int = typer.Option(48, help="synthetic labelled X-rays"),
        unlabelled: int = typer.Option(24, help="synthetic unlabelled X-rays"),
        test: int = typer.Option(12, help="held-out synthetic test X-rays"),
        preset: str = typer.Option("tiny", help="training preset"),
        seed: int = typer.Option(0),
        set_: list[str] = typer.Option([], "--set", help="config override section.key=value (repeatable)"),
    ) -> None:
        """Run every stage end to end on synthetic panoramic X-rays (minutes on a CPU)."""
        from toothseg.demo import demo

        s = demo(out, labelled=labelled, unlabelled=unlabelled, test=test, preset=preset, seed=seed,
                 overrides=set_)
        p = s.pipeline
        prep = p.prepare if isinstance(p.prepare, dict) else {}
        typer.echo("")
        typer.echo("toothseg demo: summary")
        typer.echo(f"  data: {s.synth['labelled']} labelled + {s.synth['unlabelled']} unlabelled synthetic "
                   f"X-rays, {s.synth['duplicate_groups']} injected duplicate groups")
        if prep:
            typer.echo(f"  curation: {prep.get('groups')} duplicate groups found ({prep.get('images_in_groups')} "
                       f"images), {prep.get('groups_conflicting')} with conflicting labels")
        for tag, info in p.train.get("models", {}).items():
            typer.echo(f"  trained {tag}: folds {info['folds']}, CV Dice {info['cv_dice']:.3f}")
        for r in (p.pseudo or {}).get("rounds", []):
            typer.echo(f"  student {r['tag']}: {r['n_pseudo']} pseudo-labels, CV Dice {r['dice']:.3f}")
        typer.echo(f"  held-out test Dice (fused bundle, {s.predicted} images): {s.test_dice:.3f}")
        typer.echo(f"  time: {s.total_s:.0f} s  ({', '.join(f'{k} {v:.0f}s' for k, v in s.timings_s.items())})")
        typer.echo(f"  run folder: {s.root}")
        typer.echo(f"  report: {s.report}")
        if s.review_command:
            typer.echo(f"  labelling worklist: {s.worklist}")
            typer.echo(f"  check and correct its masks in a browser: {s.review_command}")
