"""``python -m eval <command>``: see eval.cli."""

from eval.cli import main

raise SystemExit(main())
