import sys

from query import main

sys.exit(main())
