"""``make pretrain``'s launcher: turn SIZE=/REG=/... into the Megatron command line, check it,
and start it (``python -m launcher SIZE=1b REG=jreg ...``). A command-line tool outside the
Megatron extension: it imports ``megatron_ext`` (the configs, the fault checks, the console) and
``recipes`` (the size table); neither imports it.

settings.py: the ``KEY=value`` settings; planner.py: the typed ``Plan`` they resolve to;
checks.py: dataset, checkpoint, resume and memory checks; gpu.py: TE and the batch over DP;
command.py: the Megatron/torchrun command; cli.py: ``main`` (what runs, what is written, the summary).
"""

from launcher.checks import jreg_incompatible
from launcher.cli import describe, main
from launcher.command import megatron_args, run_env
from launcher.memory import check_cpu_memory
from launcher.planner import Plan, completed_iteration, plan
from launcher.settings import LaunchError, time_limit_minutes

__all__ = [
    "LaunchError", "Plan", "check_cpu_memory", "completed_iteration", "describe",
    "jreg_incompatible", "main", "megatron_args", "plan", "run_env", "time_limit_minutes",
]  # fmt: skip
