"""The ``toothseg`` command. Each verb lives in its own module under ``toothseg.cli`` and calls one API function."""

from __future__ import annotations

import importlib
import sys

import typer

from toothseg.errors import ToothsegError

app = typer.Typer(
    name="toothseg",
    help="Semi-supervised tooth segmentation for dental panoramic X-rays.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Verb modules, in pipeline order; each defines ``register(app)``.
_VERBS = ["synth", "check", "prepare", "train", "pseudo", "run", "bundle", "predict", "evaluate", "export", "report",
          "suggest", "review", "demo"]


def _register(verbs: list[str]) -> None:
    """Register each verb; a verb module that fails to import fails the command, never silently drops a verb."""
    for verb in verbs:
        importlib.import_module(f"toothseg.cli.{verb}_cmd").register(app)


_register(_VERBS)


def _quiet_third_party() -> None:
    """Keep the terminal for toothseg's own progress: Lightning's banners and advice are noise to our users."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed",
                 "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (r"Checkpoint directory .* exists and is not empty", r".*does not have many workers.*",
                    r"The number of training batches .* is smaller than the logging interval",
                    r".*`weights_only` was not set.*"):
        warnings.filterwarnings("ignore", message=pattern)


def main() -> None:
    """Entry point: user errors print one line and exit 2; no traceback for bad input."""
    _quiet_third_party()
    try:
        app()
    except ToothsegError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # the system refused a read or write (permissions, disk full, a vanished file)
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        typer.echo(f"error: {where}{exc.strerror or exc}; check the path, its permissions and free disk space",
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
