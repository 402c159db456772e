"""``python -m study KEY=value ...`` (what ``make study`` runs)."""

import sys

from study.cli import main

sys.exit(main())
