"""`python -m faultmaven` serves the app; see faultmaven.cli."""

import sys

from faultmaven.cli import main

sys.exit(main())
