"""`python -m data_prep <command>`: see data_prep.cli."""

from data_prep.cli import main

raise SystemExit(main())
