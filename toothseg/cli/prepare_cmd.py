"""`toothseg prepare DATA... --out RUN`: duplicate groups, label conflicts, group-aware folds, curation report."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare_cmd(
        data: list[Path] = typer.Argument(..., help="dataset folders (images/+masks/[+unlabelled/] or nnU-Net raw)"),
        out: Path = typer.Option(..., "--out", "-o", help="run folder to write"),
        preset: str = typer.Option("cpu", "--preset", help="config preset: recipe, cpu or tiny"),
        config: Path | None = typer.Option(None, "--config", help="YAML config layered on the preset"),
        override: list[str] = typer.Option([], "--set", help="config override section.key=value (repeatable)"),
        policy: str | None = typer.Option(None, "--policy",
                                          help="keep-finer (default), keep-all-same-fold, drop-all or keep-first"),
        threshold: int | None = typer.Option(None, "--threshold", help="max pHash distance of copies (bits)"),
        folds: int | None = typer.Option(None, "--folds", help="number of CV folds (default 5)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="redo the curation of an already prepared RUN"),
    ) -> None:
        """Find duplicates across all sources, resolve label conflicts and write group-aware folds."""
        from toothseg.api import prepare

        s = prepare(list(data), out, preset=preset, config=config, overrides=list(override), policy=policy,
                    threshold=threshold, n_folds=folds, overwrite=overwrite)
        typer.echo(f"{s['images']} images ({s['labelled']} labelled, {s['unlabelled']} unlabelled, "
                   f"{s['unreadable']} unreadable) in {s['seconds']['total']} s")
        typer.echo(f"{s['groups']} duplicate groups holding {s['images_in_groups']} images: "
                   f"{s['groups_cross_set']} labelled/unlabelled, {s['groups_conflicting']} with conflicting labels")
        typer.echo(f"policy {s['policy']}: {s['dropped']} dropped, {s['label_from']} unlabelled reuse a real label; "
                   f"{s['in_folds']} labelled images in {len(s['fold_val_sizes'])} folds (val {s['fold_val_sizes']})")
        typer.echo(f"report: {Path(out) / 'curation.html'}")
