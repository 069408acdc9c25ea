import sys

from geoindex.cli import main

sys.exit(main())
