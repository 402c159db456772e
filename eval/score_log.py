"""``make eval``'s scores into the run's own TensorBoard and W&B run, against tokens seen.

TensorBoard: ``<run>/tensorboard/lm_eval/``, one scalar ``lm_eval/<task>/<metric>`` per checkpoint
with the tokens seen as its step (TensorBoard's x axis), next to the training curves. W&B: the
run's one W&B run (its id in ``<run>/wandb/run_id``, see ``launcher.wandb_run``) is resumed and
gets the same scalars with ``tokens_seen`` as their x axis (``define_metric``); offline unless
``WANDB_MODE``/``WANDB_API_KEY`` say otherwise, like training. A run trained before the id was
stored has no W&B run to add to: TensorBoard only. Columns without tokens (``MODEL=``) are not
logged. Re-logging a checkpoint adds the same point again, which both tools draw as one. While the
training job itself still writes to that W&B run online, two writers share it: evaluate then with
``WANDB_MODE=offline`` and ``wandb sync`` after training (offline runs are separate folders).
"""

from __future__ import annotations

import os
from pathlib import Path

from common.files import WANDB_ID
from common.settings import DEFAULT_WANDB_PROJECT


def points(table: dict) -> list[tuple[int, dict[str, float]]]:
    """(tokens seen, {``lm_eval/<task>/<metric>``: value}) per checkpoint column, by tokens."""
    out = []
    for label, column in table["columns"].items():
        if not isinstance(label, int) or not column.get("tokens"):
            continue
        values = {f"lm_eval/{task}/{metric}": v[label]
                  for (task, metric), v in table["scores"].items() if label in v}  # fmt: skip
        if values:
            out.append((int(column["tokens"]), values))
    return sorted(out, key=lambda x: x[0])


def to_tensorboard(run_dir: Path, table: dict) -> Path | None:
    """Write the points as TensorBoard scalars; returns the log folder (None: nothing to log)."""
    from torch.utils.tensorboard import SummaryWriter

    logged = points(table)
    if not logged:
        return None
    folder = run_dir / "tensorboard" / "lm_eval"
    writer = SummaryWriter(log_dir=str(folder))
    for tokens, values in logged:
        for name, value in values.items():
            writer.add_scalar(name, value, global_step=tokens)
    writer.close()
    return folder


def to_wandb(run_dir: Path, table: dict) -> str | None:
    """Log the points into the run's W&B run; returns its id (None: no id stored or nothing)."""
    id_file = run_dir / WANDB_ID
    logged = points(table)
    if not id_file.is_file() or not logged or os.environ.get("WANDB_MODE") == "disabled":
        return None
    import wandb

    mode = os.environ.get("WANDB_MODE") or (
        "online" if os.environ.get("WANDB_API_KEY") else "offline"
    )
    run = wandb.init(
        id=id_file.read_text().strip(), resume="allow", dir=str(run_dir / "wandb"),
        project=os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT,
        entity=os.environ.get("WANDB_ENTITY") or None, name=run_dir.name, mode=mode,
        settings=wandb.Settings(silent=True),
    )  # fmt: skip
    run.define_metric("tokens_seen")
    run.define_metric("lm_eval/*", step_metric="tokens_seen")
    for tokens, values in logged:
        run.log({"tokens_seen": tokens, **values})
    run.finish()
    return run.id


def log_scores(run_dir: Path, print_fn=print) -> None:
    """Both, from ``<run_dir>/lm_eval/*/results.json``, saying where they went."""
    from eval.scores import collect

    table = collect(run_dir / "lm_eval")
    if tb := to_tensorboard(run_dir, table):
        print_fn(f"scores against tokens seen: TensorBoard {tb}")
    if wb := to_wandb(run_dir, table):
        print_fn(f"scores against tokens seen: W&B run {wb} (offline: wandb sync "
                 f"{run_dir}/wandb/wandb/offline-run-*)")  # fmt: skip
