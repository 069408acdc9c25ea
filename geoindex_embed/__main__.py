import sys

from geoindex_embed.cli import main

sys.exit(main())
