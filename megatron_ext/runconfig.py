"""A run's configuration as one file: ``runs/<name>/run_config.json``.

The launcher writes it when a run starts: the typed configs the run was built from (model,
training, parallel layout, regulariser), the data it reads, and the Megatron flags that ``ARGS``
added (``extra_args``; those among them that change a config field are applied to the configs, as
Megatron applies them last). eval/ rebuilds the model and the dataset from it; ``command.txt``
stays for humans. Runs started before this file existed have only ``command.txt``: ``load``
converts its flags with ``from_flags``, the same mapping that applies ``ARGS``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.settings import DEFAULT_LAMBDA, DEFAULT_REG, DEFAULT_WEIGHTS
from megatron_ext.config import LlamaConfig, ParallelConfig, TrainConfig

if TYPE_CHECKING:
    from megatron_ext.regconfig import JregConfig

RUN_CONFIG = "run_config.json"
SCHEMA_VERSION = 1

# config field -> Megatron flag, per section (the inverse of the configs' ``megatron_flags``)
_MODEL_FLAGS = {
    "num_layers": "--num-layers", "hidden_size": "--hidden-size",
    "ffn_hidden_size": "--ffn-hidden-size", "num_attention_heads": "--num-attention-heads",
    "num_query_groups": "--num-query-groups", "seq_length": "--seq-length",
    "rotary_base": "--rotary-base", "init_method_std": "--init-method-std",
    "norm_epsilon": "--norm-epsilon",
}  # fmt: skip
_TRAIN_FLAGS = {
    name: "--" + name.replace("_", "-")
    for name in ("micro_batch_size", "global_batch_size", "train_iters", "lr", "min_lr",
                 "lr_decay_style", "weight_decay", "adam_beta2", "clip_grad", "log_interval",
                 "save_interval", "eval_interval", "eval_iters")
}  # fmt: skip
_PARALLEL_FLAGS = {
    "tp": "--tensor-model-parallel-size", "pp": "--pipeline-model-parallel-size",
    "cp": "--context-parallel-size",
}  # fmt: skip
# Megatron's own defaults, for flags a command line may lack (it then ran with these). Megatron's
# --eval-iters default is 100; our recipes always pass theirs (TrainConfig.eval_iters).
MEGATRON_DEFAULTS = {
    "--eval-iters": "100", "--eval-interval": "1000", "--rotary-base": "10000",
    "--seed": "1234", "--init-method-std": "0.02", "--norm-epsilon": "1e-5",
    "--jreg-reg": DEFAULT_REG, "--jreg-lambda": str(DEFAULT_LAMBDA),
    "--jreg-weights": DEFAULT_WEIGHTS,  # the trainer's own defaults (megatron_ext.train)
    "--rope-scaling-factor": "8.0",
}  # fmt: skip
_UNTIE = "--untie-embeddings-and-output-weights"


class RunConfigError(ValueError):
    """A run's configuration cannot be read: one line naming the file and the fix."""


@dataclass(kw_only=True)
class DataConfig:
    """What the run reads: the prepared dataset (or a weighted blend of several) and how
    Megatron's GPTDataset samples it. Read a split's datasets with ``split_blend``."""

    path: str | None
    """The prepared dataset folder (with ``manifest.json``; a blend's first member); None for
    runs recorded before it."""
    prefixes: dict[str, str]
    """``train``/``valid``/``test`` -> indexed-dataset prefix (``.bin``/``.idx`` without suffix);
    empty for a blend (``members``)."""
    tokenizer_dir: str
    """The tokenizer folder (loads with ``AutoTokenizer``; a blend's members share it)."""
    members: list[dict] = field(default_factory=list)
    """A weighted blend (``DATA=0.7:data/a,0.3:data/b``): per member ``path``, ``weight``
    (normalised) and ``prefixes`` per split; empty for one dataset."""
    reset_position_ids: bool = False
    """Megatron ``--reset-position-ids``."""
    eod_mask_loss: bool = False
    """Megatron ``--eod-mask-loss``."""
    data_cache_path: str | None = None
    """Megatron ``--data-cache-path``."""
    mmap_bin_files: bool = True
    """False with Megatron ``--no-mmap-bin-files``."""

    def __post_init__(self) -> None:
        if self.members and self.prefixes:
            raise RunConfigError("data: a blend has members, not prefixes")
        for m in self.members:
            if set(m) != {"path", "weight", "prefixes"} or not m["weight"] > 0:
                raise RunConfigError(f"data: bad blend member {m}")

    def split_blend(self, split: str) -> tuple[list[str], list[float] | None]:
        """``split``'s prefixes and weights as Megatron's ``blend_per_split`` takes them (weights
        None for one dataset)."""
        if not self.members:
            return [self.prefixes[split]], None
        return [m["prefixes"][split] for m in self.members], [m["weight"] for m in self.members]


@dataclass(kw_only=True)
class RunConfig:
    """Everything eval/ needs to rebuild a run's model and data."""

    size: str | None
    """SIZE (None when unknown: an old run without ``launch.json``)."""
    model: LlamaConfig
    """Architecture, with ARGS applied."""
    train: TrainConfig
    """Schedule and batches, with ARGS applied."""
    parallel: ParallelConfig
    """The layout it trained with (checkpoints reshard to any other)."""
    reg: JregConfig
    """The regulariser."""
    seed: int
    """``--seed``: weights and data order."""
    vocab_size: int
    """Padded model vocabulary (rows of the embedding and output layer)."""
    bf16: bool
    """Trained (and saved its weights) in bf16."""
    data: DataConfig
    """The data."""
    save_dir: str
    """Where the run saved its checkpoints (``--save``)."""
    extra_args: list[str] = field(default_factory=list)
    """The Megatron flags ARGS added, as given (for a run read from ``command.txt``: its whole
    Megatron flag list, where ARGS cannot be told apart)."""

    @property
    def weights_spec(self) -> str:
        """The layer-weight schedule as WEIGHTS= writes it (``exp:0.25``)."""
        k = self.reg.schedule_k
        return self.reg.schedule if k is None else f"{self.reg.schedule}:{k:g}"

    def to_json(self) -> str:
        out = {"schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return json.dumps(out, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        d = json.loads(text)
        version = d.pop("schema_version", None)
        if version != SCHEMA_VERSION:
            raise RunConfigError(f"schema_version {version!r}, this code reads {SCHEMA_VERSION}")
        from megatron_ext.regconfig import JregConfig

        kinds = {"model": LlamaConfig, "train": TrainConfig, "parallel": ParallelConfig,
                 "reg": JregConfig, "data": DataConfig}  # fmt: skip
        return cls(**{k: kinds[k](**v) if k in kinds else v for k, v in d.items()})


def _plain(value: Any) -> Any:
    """A config as JSON: a dataclass's init fields (computed attributes such as
    ``JregConfig.weights`` are rebuilt by its ``__post_init__``)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    return value


def parse_flags(argv: list[str] | str) -> dict[str, list[str]]:
    """Flags of a Megatron command line: ``--flag`` -> its values (``[]`` for a switch).

    Only the part after ``-m megatron_ext.train`` counts (torchrun's own flags come before it);
    a repeated flag keeps its last occurrence, as argparse does.
    """
    argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
    if "megatron_ext.train" in argv:
        argv = argv[argv.index("megatron_ext.train") + 1 :]
    flags: dict[str, list[str]] = {}
    current = None
    for token in argv:
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            current = name
            flags[name] = [value] if eq else []
        elif current is not None:
            flags[current].append(token)
    return flags


def _one(flags: dict, name: str) -> str:
    values = flags[name]
    if len(values) != 1:
        raise RunConfigError(f"{name} {' '.join(values)} is not supported (one value)")
    return values[0]


def _typed(cls, name: str, text: str):
    kind = typing.get_type_hints(cls)[name]
    kind = int if kind in (int, int | None) else float if kind in (float, float | None) else str
    try:
        return kind(text)
    except ValueError:
        raise RunConfigError(f"{name} must be {kind.__name__}, got {text!r}") from None


def _values(cls, table: dict[str, str], flags: dict) -> dict:
    return {k: _typed(cls, k, _one(flags, flag)) for k, flag in table.items() if flag in flags}


def _jreg(flags: dict, num_layers: int, base: dict) -> JregConfig:
    from megatron_ext import sd_settings
    from megatron_ext.regconfig import JregConfig
    from megatron_ext.schedules import parse_schedule

    kw = dict(base)
    if "--jreg-reg" in flags:
        kw["reg"] = _one(flags, "--jreg-reg")
    sd = kw.pop("selfdistill", None)
    sd = dataclasses.asdict(sd) if dataclasses.is_dataclass(sd) else dict(sd or {})
    for flag, (name, kind) in sd_settings.FLAGS.items():
        if flag in flags:
            sd[name] = kind(_one(flags, flag))
    if kw.get("reg") == sd_settings.NAME:
        kw["selfdistill"] = sd
    if "--jreg-lambda" in flags:
        kw["lam"] = float(_one(flags, "--jreg-lambda"))
    if "--jreg-weights" in flags:
        schedule, k = parse_schedule(_one(flags, "--jreg-weights"))
        kw.update(schedule=schedule, schedule_k=k.get("k"))
    return JregConfig(**kw, num_layers=num_layers)


def _data(flags: dict, base: DataConfig | None, path: str | None) -> DataConfig:
    kw = dataclasses.asdict(base if base else DataConfig(path=path, prefixes={}, tokenizer_dir=""))
    for split in ("train", "valid", "test"):
        flag = f"--{split}-data-path"
        if flag not in flags:
            continue
        values = flags[flag]
        if len(values) == 1:
            kw["prefixes"][split] = values[0]
            continue
        pairs = list(zip(values[::2], values[1::2], strict=False))
        if (
            len(values) % 2
            or kw["prefixes"]
            or (kw["members"] and len(kw["members"]) != len(pairs))
        ):
            raise RunConfigError(f"{flag} {' '.join(values)} is not a blend of the other splits'")
        if not kw["members"]:
            kw["members"] = [{"path": None, "weight": 0.0, "prefixes": {}} for _ in pairs]
        for member, (weight, prefix) in zip(kw["members"], pairs, strict=True):
            try:
                member["weight"] = float(weight)
            except ValueError:
                raise RunConfigError(f"{flag}: blend weight {weight!r} is not a number") from None
            member["prefixes"][split] = prefix
    if kw["members"] and kw["prefixes"]:
        raise RunConfigError(
            "the data paths mix a weighted blend and a single dataset; a blend must be given "
            "for all three splits"
        )
    if kw["members"]:
        total = sum(m["weight"] for m in kw["members"])
        for m in kw["members"]:
            m["weight"] /= total
    if "--tokenizer-model" in flags:
        kw["tokenizer_dir"] = _one(flags, "--tokenizer-model")
    kw["reset_position_ids"] |= "--reset-position-ids" in flags
    kw["eod_mask_loss"] |= "--eod-mask-loss" in flags
    if "--data-cache-path" in flags:
        kw["data_cache_path"] = _one(flags, "--data-cache-path")
    kw["mmap_bin_files"] &= "--no-mmap-bin-files" not in flags
    return DataConfig(**kw)


def _parallel(flags: dict, base: ParallelConfig, num_layers: int) -> ParallelConfig:
    kw = _values(ParallelConfig, _PARALLEL_FLAGS, flags)
    layout = dataclasses.replace(base, **kw)
    pp = layout.pp
    if "--num-layers-per-virtual-pipeline-stage" in flags:
        per_stage = int(_one(flags, "--num-layers-per-virtual-pipeline-stage"))
        layout = dataclasses.replace(layout, vpp=num_layers // pp // per_stage)
    if "--sequence-parallel" in flags:
        layout = dataclasses.replace(layout, sequence_parallel=True)
    if "--use-distributed-optimizer" in flags:
        layout = dataclasses.replace(layout, distributed_optimizer=True)
    return layout


def _switches(flags: dict, model: LlamaConfig | None) -> dict:
    """The model switches of ``megatron_flags`` that ``flags`` set (tied embeddings, q/k/v biases,
    llama3 RoPE scaling: imported models use them): on top of ``model`` (ARGS), or, ``model``
    None, for a whole command line, where an absent switch is Megatron's default: tied
    embeddings, no biases, no scaling. ``--rope-scaling-factor`` counts only with
    ``--use-rope-scaling`` (Megatron's default 8) or on a model that already scales."""
    kw = {}
    if model is None or _UNTIE in flags:
        kw["tie_embeddings"] = _UNTIE not in flags
    if "--add-qkv-bias" in flags:
        kw["qkv_bias"] = True
    factor = model.rope_scaling_factor if model else None
    if "--use-rope-scaling" in flags or factor is not None:
        default = MEGATRON_DEFAULTS["--rope-scaling-factor"] if factor is None else str(factor)
        text = _one(flags, "--rope-scaling-factor") if "--rope-scaling-factor" in flags else default
        kw["rope_scaling_factor"] = _typed(LlamaConfig, "rope_scaling_factor", text)
    return kw


def with_args(cfg: RunConfig, extra: list[str]) -> RunConfig:
    """``cfg`` with the Megatron flags ``extra`` (ARGS) applied where they change a field."""
    flags = parse_flags(extra)
    try:
        model = dataclasses.replace(cfg.model, **_values(LlamaConfig, _MODEL_FLAGS, flags),
                                    **_switches(flags, cfg.model))  # fmt: skip
        train = dataclasses.replace(cfg.train, **_train_values(flags, cfg.train.train_iters))
    except ValueError as err:
        raise RunConfigError(str(err)) from None
    reg = {f.name: getattr(cfg.reg, f.name) for f in dataclasses.fields(cfg.reg) if f.init}
    reg.pop("num_layers")
    return dataclasses.replace(
        cfg, model=model, train=train,
        parallel=_parallel(flags, cfg.parallel, model.num_layers),
        reg=_jreg(flags, model.num_layers, reg),
        seed=int(_one(flags, "--seed")) if "--seed" in flags else cfg.seed,
        vocab_size=int(_one(flags, "--vocab-size")) if "--vocab-size" in flags else cfg.vocab_size,
        bf16=cfg.bf16 or "--bf16" in flags, data=_data(flags, cfg.data, None),
        save_dir=_one(flags, "--save") if "--save" in flags else cfg.save_dir,
        extra_args=list(extra),
    )  # fmt: skip


def _train_values(flags: dict, train_iters: int) -> dict:
    kw = _values(TrainConfig, _TRAIN_FLAGS, flags)
    if "--lr-warmup-iters" in flags:
        iters = kw.get("train_iters", train_iters)
        kw["lr_warmup_fraction"] = int(_one(flags, "--lr-warmup-iters")) / iters
    return kw


def from_flags(flags: dict, *, size: str | None = None, vocab: int | None = None) -> RunConfig:
    """The config of a complete Megatron command line (a run's ``command.txt``)."""
    flags = {k: [v] for k, v in MEGATRON_DEFAULTS.items()} | flags
    missing = [f for f in ("--num-layers", "--hidden-size", "--ffn-hidden-size",
                           "--num-attention-heads", "--seq-length", "--micro-batch-size",
                           "--global-batch-size", "--train-iters", "--tokenizer-model",
                           "--train-data-path", "--valid-data-path", "--test-data-path")
               if f not in flags]  # fmt: skip
    if missing:
        raise RunConfigError(f"no {missing[0]}; cannot rebuild the run")
    model_kw = _values(LlamaConfig, _MODEL_FLAGS, flags) | _switches(flags, None)
    if "--group-query-attention" not in flags:
        model_kw["num_query_groups"] = model_kw["num_attention_heads"]
    try:
        model = LlamaConfig(**model_kw)
        train = TrainConfig(**_train_values(flags, int(_one(flags, "--train-iters"))))
    except ValueError as err:
        raise RunConfigError(str(err)) from None
    return RunConfig(
        size=size, model=model, train=train,
        parallel=_parallel(flags, ParallelConfig(sequence_parallel=False), model.num_layers),
        reg=_jreg(flags, model.num_layers, {}), seed=int(_one(flags, "--seed")),
        vocab_size=vocab or int(_one(flags, "--vocab-size")), bf16="--bf16" in flags,
        data=_data(flags, None, None),
        save_dir=_one(flags, "--save") if "--save" in flags else "",
    )  # fmt: skip


def load(run_dir: Path) -> RunConfig:
    """A run's config: ``run_config.json``, or for runs recorded before it the flags of
    ``command.txt`` (with SIZE and the padded vocabulary from ``launch.json``)."""
    path = run_dir / RUN_CONFIG
    try:
        if path.is_file():
            return RunConfig.from_json(path.read_text())
        command = run_dir / "command.txt"
        if not command.is_file():
            raise RunConfigError(
                f"{run_dir} has no {RUN_CONFIG} (nor command.txt); is it a run directory from "
                "make pretrain?"
            )
        record = run_dir / "launch.json"
        launch = json.loads(record.read_text()) if record.is_file() else {}
        argv = shlex.split(command.read_text())
        if "megatron_ext.train" in argv:
            argv = argv[argv.index("megatron_ext.train") + 1 :]
        cfg = from_flags(parse_flags(argv), size=launch.get("size"), vocab=launch.get("vocab"))
        return dataclasses.replace(cfg, extra_args=argv)
    except RunConfigError as err:
        where = path if path.is_file() else run_dir / "command.txt"
        message = str(err)
        raise RunConfigError(
            message if str(run_dir) in message else f"{where}: {message}"
        ) from None
