"""`python -m local.run` (`make run`)."""

import sys

from local.run.main import main

sys.exit(main())
