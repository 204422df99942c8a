"""The command's verbs: every one registered; a verb module that cannot be imported fails loudly."""

from __future__ import annotations

import pytest

import toothseg.cli as cli


def test_every_verb_is_registered() -> None:
    names = {c.name for c in cli.app.registered_commands}
    assert {"bundle", "predict", "run", "train", "pseudo-label", "demo"} <= names
    assert len(names) == len(cli._VERBS)


def test_a_missing_verb_module_is_an_error_not_a_skipped_verb() -> None:
    with pytest.raises(ModuleNotFoundError, match="toothseg.cli.nope_cmd"):
        cli._register(["nope"])
