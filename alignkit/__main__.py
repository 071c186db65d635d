"""`python -m alignkit` (also what `accelerate launch -m alignkit` runs)."""

import sys

from alignkit.cli import main

sys.exit(main())
