"""`toothseg synth OUT`: write a synthetic OPG dataset (layout a) with injected duplicates and a truth file."""

from __future__ import annotations

from pathlib import Path

import typer

from toothseg.errors import InputError


def _parse_size(size: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InputError("--size", f"cannot read '{size}'", "write HEIGHTxWIDTH, e.g. 320x640") from None
    return h, w


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_cmd(
        out: Path = typer.Argument(..., help="output folder (must be empty or new)"),
        labelled: int = typer.Option(40, "--labelled", min=0, help="images with masks (OUT/images + OUT/masks)"),
        unlabelled: int = typer.Option(20, "--unlabelled", min=0, help="images without masks (OUT/unlabelled)"),
        size: str = typer.Option("320x640", "--size", help="HEIGHTxWIDTH of every image"),
        seed: int = typer.Option(0, "--seed", help="same seed, same dataset"),
        duplicates: bool = typer.Option(True, "--duplicates/--no-duplicates", help="inject duplicate groups"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace synth output already in OUT"),
    ) -> None:
        """Write synthetic panoramic X-rays with tooth masks; OUT/synth_truth.csv lists the duplicate groups."""
        from toothseg.api import synth

        h, w = _parse_size(size)
        res = synth(out, labelled=labelled, unlabelled=unlabelled, height=h, width=w, seed=seed,
                    duplicates=duplicates, overwrite=overwrite)
        typer.echo(f"wrote {res['labelled']} labelled + {res['unlabelled']} unlabelled {h}x{w} images to {res['out']} "
                   f"({res['duplicate_groups']} duplicate groups, {res['images_in_duplicate_groups']} images in them) "
                   f"in {res['seconds']} s")
