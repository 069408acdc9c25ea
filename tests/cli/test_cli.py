"""The front door: ``geoindex <command>`` and its aliases, as a user runs them (installed scripts)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from geoindex.cli import ALIASES, COMMANDS, main
from tests.helpers import REPO

BIN = Path(sys.executable).parent


def _script(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed next to {sys.executable}: run `make install`")
    return path


def test_help_lists_the_six_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("build", "locate", "serve", "embed", "train", "inspect"):
        assert f"\n  {name} " in out
    assert main([]) == 2  # no command: usage, and a failing status


def test_unknown_command_is_one_line_with_the_choices(capsys):
    assert main(["bulid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'bulid'" in err and "build" in err


def test_version_of_the_installed_script():
    proc = subprocess.run([_script("geoindex"), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("geoindex ") and proc.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help_under_its_new_name(command):
    proc = subprocess.run([_script("geoindex"), command, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: geoindex {command}")


@pytest.mark.parametrize("script", sorted(ALIASES))
def test_aliases_run_the_same_command_under_their_own_name(script):
    command, notice = ALIASES[script]
    proc = subprocess.run([_script(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {script}")
    assert (f"geoindex {command}" in proc.stderr) == notice  # the notice goes to stderr, never stdout


def test_cell_flags_given_to_a_photo_build_are_refused_even_at_their_defaults(tmp_path, capsys):
    from geoindex.cli.build import main, parser
    from geoindex.cli.build_photos import given_dests

    p = parser()
    argv = ["--photos", str(tmp_path / "p.csv"), "-o", str(tmp_path / "x"), "--store", "auto", "--batch-size", "8192"]
    assert given_dests(p, argv) == {"photos", "out", "store", "batch_size"}
    assert p.parse_args(argv[:4]).store == "auto" and p.parse_args(argv[:4]).batch_size == 8192  # defaults restored
    assert main(argv) == 2
    assert "--store is a cell-index flag" in capsys.readouterr().err and not (tmp_path / "x").exists()



@pytest.mark.parametrize("flag", [["--backend", "onnx"], ["--clip-model", "tiny-test"], ["--image-root", "."]])
def test_photo_flags_given_to_a_cell_build_are_refused_before_any_work(tmp_path, capsys, flag):
    """A cell or CSV-point build runs no image tower: a photo flag there was silently ignored."""
    from geoindex.cli.build import main

    assert main(["--resolution", "0", "--out", str(tmp_path / "x"), *flag]) == 2
    err = capsys.readouterr().err
    assert f"{flag[0]} is a --photos flag" in err and "give --photos CSV" in err and not (tmp_path / "x").exists()

def test_build_index_is_renamed_build_gallery():
    import geoindex

    with pytest.warns(DeprecationWarning, match="renamed geoindex.build_gallery"):
        old = geoindex.build_index
    assert old is geoindex.build_gallery and "build_index" not in geoindex.__all__


def test_factory_flag_and_its_older_name_refused(capsys, tmp_path):
    from geoindex.cli.build import main, parser
    from geoindex.index.defaults import MEASURED

    p = parser()
    assert p.parse_args(["-r", "2", "-o", "x", "--factory", "Flat"]).factory == "Flat"
    for flags in (["-r", "2"], ["--photos", str(tmp_path / "p.csv")]):
        assert main([*flags, "-o", str(tmp_path / "x"), "--index", "Flat"]) == 2
        assert "--index is not a build flag: give the FAISS factory string as --factory Flat" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    text = p.format_help()
    assert "--index" not in text
    flat = " ".join(text.split())
    for factory, search in MEASURED.values():  # the help states the table, not a copy of it
        assert f"{factory} {search}" in flat


def test_only_the_front_doors_are_top_level_packages():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["geoindex*", "build_index*", "query*"]
