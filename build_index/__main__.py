import sys

from build_index.cli import main

sys.exit(main())
