"""``python -m study KEY=value ...``: bad settings stop with one line ``error: ...`` (exit code 2)
before anything runs; a failed stage stops with one line naming it and its log (exit code 1)."""

from __future__ import annotations

import sys

from study.settings import SETTINGS, StudyError, check_run_record, parse


def usage() -> str:
    return "usage: python -m study KEY=value ...\n" + "\n".join(
        f"  {k}: {v}" for k, v in SETTINGS.items()
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    from study.runner import Runner, StageError

    try:
        settings = parse(argv)
        for run in settings.runs():
            check_run_record(settings, run)
        runner = Runner(settings)
        if "train" in settings.stages:
            runner.check()
        runner.run()
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except StageError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted: make study continues from here when run again", file=sys.stderr)
        return 130
    return 0
