"""``python -m megatron_ext.train`` with rank 0's checkpoint-tracker write delayed by
``TRACKER_DELAY_S`` seconds: the order in which the W&B hook on the last rank met the missing
tracker file on a loaded machine (issue 10, item 1), made deterministic for the test."""

from __future__ import annotations

import os
import sys
import time

from megatron.training import checkpointing

from megatron_ext import train

_tracker_filename = checkpointing.get_checkpoint_tracker_filename


def delayed_tracker_filename(checkpoints_path):
    # rank 0 asks for the name right before it writes the tracker (checkpointing.py:960)
    if os.environ.get("RANK") == "0" and sys._getframe(1).f_code.co_name == "save_checkpoint":
        time.sleep(float(os.environ["TRACKER_DELAY_S"]))
    return _tracker_filename(checkpoints_path)


if __name__ == "__main__":
    checkpointing.get_checkpoint_tracker_filename = delayed_tracker_filename
    sys.exit(train.main())
