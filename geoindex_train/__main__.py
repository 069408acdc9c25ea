import sys

from geoindex_train.cli import main

sys.exit(main())
