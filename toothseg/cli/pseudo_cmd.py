"""`toothseg pseudo-label RUN`: pseudo-label the unlabelled images, optionally retrain with a schedule."""

from __future__ import annotations

from pathlib import Path

import typer

from toothseg.folds_arg import parse_folds


def register(app: typer.Typer) -> None:
    @app.command("pseudo-label")
    def pseudo_cmd(
        run: Path = typer.Argument(..., help="run folder with trained models (after 'toothseg train')"),
        teacher: str | None = typer.Option(None, help="train/<tag> that labels, or 'bundle' [default: pseudo.teacher, "
                                           "else the best supervised model]"),
        confidence: str | None = typer.Option(None, help="agreement | entropy | band | spread [default: config]"),
        select: str | None = typer.Option(None, help="all | topk | quantile | threshold [default: config]"),
        value: float | None = typer.Option(None, help="k (topk), kept fraction (quantile) or min score (threshold)"),
        folds: str | None = typer.Option(None, help="teacher folds to use, e.g. 0,1 [default: all]"),
        overwrite: bool = typer.Option(False, "--overwrite", help="label again over existing pseudo-labels"),
        retrain: bool = typer.Option(False, "--retrain", help="then train students with the schedule below"),
        schedule: str | None = typer.Option(None, help="labelled | labelled-continue | pretrain | mix | pretrain-mix | "
                                             "consistency [default: config]"),
        rounds: int | None = typer.Option(None, help="iterative rounds: each round's students label the next"),
        soft: bool | None = typer.Option(None, "--soft/--hard", help="distil on probabilities / train on masks"),
        max_time: str | None = typer.Option(None, help="wall-clock budget per model, HH:MM:SS"),
    ) -> None:
        """Label unlabelled X-rays with the teacher ensemble (+TTA), score and select them; --retrain trains students
        (schedules without offline pseudo-labels, labelled-continue and consistency, skip the labelling)."""
        import toothseg.api as ts
        from toothseg.pseudo.schedules import uses_pseudo_labels

        fold_list = parse_folds(folds)
        if retrain and not uses_pseudo_labels(run, schedule):
            typer.echo(f"schedule {schedule or 'from the config'} trains without offline pseudo-labels: labelling "
                       "skipped")
        else:
            s = ts.pseudo_label(run, teacher=teacher, folds=fold_list, confidence=confidence, select_method=select,
                                select_value=value, overwrite=overwrite)
            teacher = s["teacher"]
            typer.echo(f"teacher {s['teacher']} ({s['members']} members), threshold {s['threshold']:.2f}")
            typer.echo(f"{s['n_images']} images pseudo-labelled, {s['n_selected']} selected ({s['select']} "
                       f"{s['select_value']:g} by {s['confidence']}), {s['n_skipped']} copies/dropped skipped"
                       + (f", {len(s['failed'])} unreadable" if s["failed"] else ""))
            typer.echo(f"wrote {s['out']}/{{scores.csv,soft/,hard/,pseudo.json}}")
        if retrain:
            from toothseg.pseudo.schedules import retrain as do_retrain

            r = do_retrain(run, schedule=schedule, rounds=rounds, soft=soft, folds=fold_list,
                           teacher=teacher, max_time=max_time)
            for row in r["rounds"]:
                typer.echo(f"round {row['round']}: {row['tag']}: CV Dice {row['dice']:.4f} IoU {row['iou']:.4f} "
                           f"HD95 {row['hd95']:.2f} ({row['n_images']} images, {row['n_pseudo']} pseudo)")
