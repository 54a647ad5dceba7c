"""`python -m local.bench` (`make bench`)."""

import sys

from local.bench.main import main

sys.exit(main())
