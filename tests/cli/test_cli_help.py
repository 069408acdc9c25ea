"""Every option of every subcommand says what it does: `geoindex <sub> --help` is walked, parser by
parser (subcommands of subcommands too), and an option without help text fails the test."""

import argparse
import contextlib
import io

import pytest

from geoindex.cli import COMMANDS, run


def parsers_of(command: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """The parsers `geoindex COMMAND --help` builds, and the help text it prints."""
    made = []
    init = argparse.ArgumentParser.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", record)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        run(command, ["--help"])
    assert done.value.code == 0
    return made, out.getvalue()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help(command, monkeypatch):
    parsers, text = parsers_of(command, monkeypatch)
    assert parsers and text.startswith(f"usage: geoindex {command}")
    missing = []
    for p in parsers:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS and action.option_strings == []:
                missing.append(f"{p.prog}: {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing
    assert "python -m" not in text and "build_index.inspect" not in text  # user help, not an internal docstring
    for old in ("geolocate ", "geoindex-embed ", "geoindex-train ", "geoindex-serve "):
        assert old not in text, f"{command} --help still shows {old.strip()!r}: examples use `geoindex <sub>`"
