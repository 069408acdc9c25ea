import sys

from query.cli import main

sys.exit(main())
