import sys

from build_index import main

sys.exit(main())
