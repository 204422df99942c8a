"""`toothseg suggest RUN [--n 50] [--strategy spread|typical|uncertain] [--out FILE]`:
what to label next."""

from __future__ import annotations

from pathlib import Path

import typer

from toothseg.folds_arg import parse_folds
from toothseg.suggest.strategy import DEFAULT


def register(app: typer.Typer) -> None:
    @app.command("suggest")
    def suggest_cmd(
        run: Path = typer.Argument(..., help="run folder with a bundle (after 'toothseg train' or 'toothseg run')"),
        n: int = typer.Option(50, "--n", min=1, help="how many images to suggest"),
        out: Path | None = typer.Option(None, "--out", "-o", help="worklist CSV (default RUN/suggest/worklist.csv; "
                                        "the JSON goes beside it)"),
        bundle: Path | None = typer.Option(None, "--bundle", help="bundle to score with (default RUN/bundle)"),
        folds: str | None = typer.Option(None, "--folds", help="use only these folds, e.g. 0,1 (faster)"),
        strategy: str = typer.Option(DEFAULT, "--strategy",
                                     help="spread: seeded draws weighted by uncertainty x distance from the labels "
                                          "and earlier picks; typical: one typical image per region no label "
                                          "covers; uncertain: k-center greedy among the most uncertain"),
        oversample: float = typer.Option(4.0, "--oversample", min=1.0,
                                         help="uncertain strategy: k-center greedy picks among the OVERSAMPLE x N "
                                              "most uncertain"),
        use_labelled: bool = typer.Option(True, "--use-labelled/--ignore-labelled",
                                          help="keep picks away from images that already have labels"),
        threads: int | None = typer.Option(None, "--threads", min=1, help="compute threads (default train.threads)"),
    ) -> None:
        """Pick unlabelled X-rays to label: uncertain ones away from the labels, spread over the pool."""
        from toothseg.api import suggest

        s = suggest(run, n=n, out=out, bundle=bundle, folds=parse_folds(folds), oversample=oversample,
                    use_labelled=use_labelled, threads=threads, strategy=strategy)
        typer.echo(f"{s['picked']} of {s['scored']} unlabelled images suggested ({s['strategy']} strategy, "
                   f"{s['copies']} near-duplicates counted once, {len(s['failed'])} failed) in {s['seconds']:.0f} s "
                   f"-> {s['csv']}")
        typer.echo(f"review them: toothseg review {run if out is None else s['json']}")
