"""``geoindex <command>``: the one front door over the library.

Each command is a module of this package with ``main(argv=None, prog=...)`` and a first docstring
line that says what it does; ``build_index`` and ``geolocate`` are the same ``main`` under the
names the design gives them, and ``geoindex-serve``, ``geoindex-embed``, ``geoindex-train`` the
same again with a one-line notice of the new name. Modules load only when their command runs, so
``geoindex --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name -> (module, one line for --help)
    "build": ("geoindex.cli.build", "encode H3 cells (or a lat,lng CSV) into an index directory"),
    "locate": ("geoindex.cli.locate", "where were these photos taken? images, texts or embeddings against an index"),
    "serve": ("geoindex.cli.serve", "the HTTP API and the web page over an index"),
    "embed": ("geoindex.cli.embed", "GeoCLIP location embeddings of a file of coordinates"),
    "train": ("geoindex.cli.train", "fine-tune GeoCLIP on your own geotagged photos"),
    "inspect": ("geoindex.cli.inspect", "verify an index's checksums and look points up in it"),
}
ALIASES = {  # installed script -> command; True: print a one-line notice of the new name
    "build_index": ("build", False),
    "geolocate": ("locate", False),
    "geoindex-serve": ("serve", True),
    "geoindex-embed": ("embed", True),
    "geoindex-train": ("train", True),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: geoindex [--version] <command> [options]", "",
             "Planet-scale image geolocation: GeoCLIP embeddings of H3 cells in FAISS, metadata in DuckDB.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`geoindex <command> --help` for each command's options.",
              "build_index and geolocate are `geoindex build` and `geoindex locate` under their own names."]
    return "\n".join(lines)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("geoindex")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def run(command: str, argv: list[str], prog: str | None = None) -> int:
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(argv, prog=prog or f"geoindex {command}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"geoindex {version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"geoindex: error: unknown command {command!r}: choose one of {', '.join(COMMANDS)} "
              "(geoindex --help)", file=sys.stderr)
        return 2
    return run(command, rest)


def alias(script: str):
    """The ``main`` of an installed alias script: the command under its old name."""
    command, notice = ALIASES[script]

    def alias_main(argv: list[str] | None = None) -> int:
        if notice:
            print(f"{script}: note: this is now `geoindex {command}`; {script} stays as an alias", file=sys.stderr)
        return run(command, sys.argv[1:] if argv is None else list(argv), prog=script)

    return alias_main


serve_alias = alias("geoindex-serve")
embed_alias = alias("geoindex-embed")
train_alias = alias("geoindex-train")
