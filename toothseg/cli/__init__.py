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
_VERBS = ["synth", "check", "prepare", "train", "pseudo", "run", "predict", "evaluate", "export", "report", "demo"]


def _register_all() -> None:
    for verb in _VERBS:
        name = f"toothseg.cli.{verb}_cmd"
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # verb not built yet
                continue
            raise
        mod.register(app)


_register_all()


def main() -> None:
    """Entry point: user errors print one line and exit 2; no traceback for bad input."""
    try:
        app()
    except ToothsegError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
