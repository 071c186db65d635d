"""`python -m alignkit.cli` (the same as `python -m alignkit`)."""

import sys

from alignkit.cli import main

sys.exit(main())
