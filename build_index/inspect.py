"""``python -m build_index.inspect DIR``: ``geoindex inspect`` under its older name (the code is
:mod:`geoindex.cli.inspect`)."""

import sys

from geoindex.cli import run

if __name__ == "__main__":
    sys.exit(run("inspect", sys.argv[1:], prog="python -m build_index.inspect"))
