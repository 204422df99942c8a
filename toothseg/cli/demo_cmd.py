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
        typer.echo("")
        typer.echo("toothseg demo: summary")
        for k, v in s["pipeline"].items() if isinstance(s["pipeline"], dict) else []:
            if isinstance(v, (str, int, float)):
                typer.echo(f"  {k}: {v}")
        typer.echo(f"  held-out test Dice: {s['test_dice']:.3f}")
        typer.echo(f"  time: {s['total_s']:.0f} s  ({', '.join(f'{k} {v:.0f}s' for k, v in s['timings_s'].items())})")
        typer.echo(f"  run folder: {s['root']}")
        typer.echo(f"  report: {s['report']}")
