"""`toothseg train RUN [--fold K|all] [--preset NAME] [--max-time HH:MM:SS] [--resume] [--init-from RUN]`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        run: Path = typer.Argument(..., help="run folder written by 'toothseg prepare'"),
        fold: str = typer.Option("all", "--fold", help="fold number or 'all'"),
        preset: str | None = typer.Option(None, "--preset", help="re-base model/train settings on a preset: "
                                          "recipe, cpu or tiny (curation settings are kept)"),
        max_time: str | None = typer.Option(None, "--max-time", help="wall-clock budget per model, HH:MM:SS"),
        resume: bool = typer.Option(False, "--resume", help="continue interrupted folds from their last.ckpt; "
                                    "finished ones are kept"),
        overwrite: bool = typer.Option(False, "--overwrite", help="delete existing checkpoints and start again"),
        init_from: Path | None = typer.Option(None, "--init-from", help="an earlier run: each fold starts from its "
                                              "fold of the same model and scale (fine-tune, e.g. after review)"),
        devices: str | None = typer.Option(None, "--devices", help="devices per node (e.g. 2 or 'auto')"),
        strategy: str | None = typer.Option(None, "--strategy", help="Lightning strategy, e.g. ddp"),
        num_nodes: int | None = typer.Option(None, "--num-nodes", help="nodes for multi-node DDP"),
        accelerator: str | None = typer.Option(None, "--accelerator", help="cpu, gpu or auto"),
        override: list[str] = typer.Option([], "--set", help="config override section.key=value (repeatable)"),
        profile: bool = typer.Option(False, "--profile", help="print steps/min, images/s and where the time went "
                                     "(data, compute, validation, checkpoints); also written to profile.json"),
    ) -> None:
        """Train every configured model and scale on the run's folds (checkpoints, OOF scores, hard mining)."""
        from toothseg.api import train

        sets = list(override) + (["train.profile=true"] if profile else [])
        for key, val in (("devices", devices), ("strategy", strategy), ("num_nodes", num_nodes),
                         ("accelerator", accelerator)):
            if val is not None:
                sets.append(f"train.{key}={val}")
        out = train(run, fold=fold, preset=preset, max_time=max_time, resume=resume, overrides=sets,
                    overwrite=overwrite, init_from=init_from)
        for tag, info in out.get("models", {}).items():
            typer.echo(f"{tag}: folds {info['folds']}  CV Dice {info['cv_dice']:.4f}  IoU {info['cv_iou']:.4f}  "
                       f"HD95 {info['cv_hd95']:.1f} px  ({run / 'train' / tag})")
        if profile:
            from toothseg.run.folder import open_run, read_json
            from toothseg.train.profile import profile_lines

            for fam in open_run(run).families():
                for fold in fam.folds():
                    if (fold.path / "profile.json").is_file():
                        typer.echo(f"profile {fam.tag}/{fold.path.name}:")
                        for line in profile_lines(read_json(fold.path / "profile.json")):
                            typer.echo(f"  {line}")
        if out.get("bundle"):
            typer.echo(f"bundle: {out['bundle']}")
