"""``python -m study KEY=value ...``: bad settings stop with one line ``error: ...`` (exit code 2)
before anything runs; a failed stage stops with one line naming it and its log (exit code 1)."""

from __future__ import annotations

import sys

from study.cluster import CLUSTER_SETTINGS
from study.settings import SETTINGS, StudyError, check_run_record, parse


def usage() -> str:
    return "usage: python -m study KEY=value ...\n" + "\n".join(
        f"  {k}: {v}" for k, v in {**SETTINGS, **CLUSTER_SETTINGS}.items()
    )


def on_cluster(argv: list[str]) -> bool:
    """Any cluster setting (SCHEDULER, NODES, ...): the study goes to the scheduler."""
    return any(x.partition("=")[0] in CLUSTER_SETTINGS and x.partition("=")[2] for x in argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    from study.runner import Runner, StageError

    try:
        if on_cluster(argv):
            from study.cluster import submit

            submit(argv)
            return 0
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
