"""torchrun for ``make pretrain``: a stopped run ends with the trainer's one line, no traceback.

On SIGINT or SIGTERM torchrun sends the same signal to every rank's process group, waits up to
``--shutdown-timeout`` seconds (the launcher gives enough for a checkpoint save) before SIGKILL,
then raises ``SignalException`` (``torch/distributed/elastic/agent/server/api.py:751``), which
plain torchrun prints as a traceback with exit code 1. Here that becomes exit code 128 + signal,
what a shell reports for a process a signal stopped (the ranks have saved a checkpoint and said
so: ``megatron_ext.stop``). Usage is torchrun's: ``python -m launcher.torchrun [torchrun
flags] -m module ...``.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main as torchrun_main


def main(argv: list[str] | None = None) -> int:
    try:
        torchrun_main(argv)
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
