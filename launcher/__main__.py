"""``python -m launcher KEY=value ...`` (what ``make pretrain`` and jobs/local.sh run)."""

import sys

from launcher.cli import main

sys.exit(main())
