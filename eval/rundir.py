"""What a pretraining run directory holds, read from its files only (no Megatron import).

``command.txt`` is the exact Megatron command the run was started with, so the architecture, the
data, the batch schedule and the seed come from its flags (user ``ARGS`` included) rather than
from today's recipes. Validation passes are numbered as Megatron consumes its validation
iterator: pass ``e`` (1-based) reads samples ``[(e-1) E G, e E G)`` of a validation GPTDataset
built for ``(train_iters // eval_interval + 1) E G`` samples, E = eval_iters, G = global batch
(``megatron/training/training.py``: ``get_train_valid_test_num_samples`` and the
``consumed_valid_samples`` restored on resume).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from megatron_ext.config import LlamaConfig

REPO = Path(__file__).resolve().parents[1]
TRACKER = "latest_checkpointed_iteration.txt"
ANALYSIS_FILE = "analysis.jsonl"  # written by eval.analyze, read by eval.plots
POOLED_NOTE = (
    "old metrics.jsonl format: the line at the last iteration averages this pass with the final "
    "validation pass and the test-set pass"
)

# Flags whose model the one-process Llama builder (megatron_ext.model) cannot reproduce.
_UNSUPPORTED = {
    "--apply-layernorm-1p": "zero-centred RMSNorm weights",
    "--qk-layernorm": "QK layernorm",
    "--num-experts": "mixture of experts",
    "--rotary-interleaved": "interleaved RoPE",
    "--reset-attention-mask": "document-masked attention",
    "--add-qkv-bias": "QKV biases",
}


class EvalError(ValueError):
    """A user error: printed as one line ``error: ...``, exit code 2."""


def resolve_run(name: str) -> Path:
    """A run name under ``runs/``, or a path (as ``make pretrain RUN=`` reads it)."""
    path = Path(name) if "/" in name else REPO / "runs" / name
    return path if path.is_absolute() else REPO / path


def parse_command(text: str) -> dict[str, list[str]]:
    """Flags of a Megatron command line: ``--flag`` -> its values (``[]`` for a switch).

    Only the part after ``-m megatron_ext.train`` counts (torchrun's own flags come before it);
    a repeated flag keeps its last occurrence, as argparse does.
    """
    argv = shlex.split(text)
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


@dataclass(kw_only=True)
class Schedule:
    """The batch and validation schedule of a run."""

    seed: int
    """Megatron ``--seed`` (weights and data order)."""
    micro_batch_size: int
    """Sequences per microbatch."""
    global_batch_size: int
    """Sequences per iteration (and per validation iteration)."""
    train_iters: int
    """Planned training iterations."""
    eval_interval: int
    """Iterations between validation passes."""
    eval_iters: int
    """Validation iterations per pass."""

    def __post_init__(self):
        for name in ("micro_batch_size", "global_batch_size", "train_iters", "eval_interval",
                     "eval_iters"):  # fmt: skip
            if getattr(self, name) < 1:
                raise EvalError(f"command.txt: {name} must be positive, got {getattr(self, name)}")

    @property
    def samples_per_pass(self) -> int:
        """Validation samples one pass consumes."""
        return self.eval_iters * self.global_batch_size

    @property
    def num_passes(self) -> int:
        """Validation passes Megatron plans (in-loop ones plus the final one)."""
        return self.train_iters // self.eval_interval + 1

    @property
    def valid_num_samples(self) -> int:
        """``num_samples`` of the run's validation GPTDataset."""
        return self.num_passes * self.samples_per_pass

    def pass_samples(self, valid_pass: int) -> range:
        """Indices into the validation dataset read by pass ``valid_pass`` (1-based)."""
        if not 1 <= valid_pass <= self.num_passes:
            raise EvalError(
                f"validation pass {valid_pass} does not exist; this run has passes "
                f"1..{self.num_passes}"
            )
        start = (valid_pass - 1) * self.samples_per_pass
        return range(start, start + self.samples_per_pass)

    def pass_at(self, iteration: int) -> int | None:
        """The validation pass run right after ``iteration`` (None when none was).

        At a multiple of ``eval_interval`` that is the in-loop pass; at the end of training
        (``train_iters`` not a multiple) the final pass.
        """
        if iteration % self.eval_interval == 0 and iteration > 0:
            return iteration // self.eval_interval
        if iteration == self.train_iters:
            return self.num_passes
        return None


@dataclass(kw_only=True)
class RunDir:
    """A run directory and everything its files say about the run."""

    path: Path
    """The run directory."""
    flags: dict[str, list[str]] = field(repr=False)
    """``command.txt`` flags."""
    model: LlamaConfig
    """Architecture."""
    schedule: Schedule
    """Batches and validation passes."""
    vocab_size: int
    """Padded model vocabulary (rows of the embedding and output layer)."""
    prefixes: dict[str, str]
    """``train``/``valid``/``test`` -> dataset prefix (``.bin``/``.idx`` without suffix)."""
    tokenizer_dir: Path
    """The dataset's tokenizer folder (loads with ``AutoTokenizer``)."""
    checkpoints_dir: Path
    """Where ``iter_*`` folders are."""
    bf16: bool
    """The run trained (and saved its weights) in bf16."""
    reg: str
    """``--jreg-reg``."""
    lam: float
    """``--jreg-lambda``."""
    weights: str
    """``--jreg-weights``."""

    @property
    def name(self) -> str:
        return self.path.name

    def checkpoints(self) -> list[int]:
        """Iterations of complete checkpoints (up to the tracker; interrupted saves excluded)."""
        tracker = self.checkpoints_dir / TRACKER
        text = tracker.read_text().strip() if tracker.is_file() else ""
        if not text.isdigit():
            return []
        last = int(text)
        found = []
        for sub in self.checkpoints_dir.glob("iter_*"):
            suffix = sub.name[len("iter_") :]
            if suffix.isdigit() and int(suffix) <= last and (sub / "metadata.json").is_file():
                found.append(int(suffix))
        return sorted(found)

    def checkpoint_dir(self, iteration: int) -> Path:
        return self.checkpoints_dir / f"iter_{iteration:07d}"

    def metrics(self) -> list[dict]:
        """``metrics.jsonl`` lines (an unreadable torn last line is skipped)."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        lines = []
        for text in path.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                continue
        return lines

    def logged_pass(self, valid_pass: int) -> tuple[dict | None, str | None]:
        """The ``metrics.jsonl`` line of validation pass ``valid_pass`` and a caveat, if any.

        Lines with ``eval_pass`` name their pass (the last one wins after a resume). In older
        files (no ``eval_pass``) a validation line is matched by its iteration; the line of the
        last iteration there averaged every evaluation after training (the in-loop pass, the final
        pass and the test-set pass), so it comes with a note saying it is not one pass.
        """
        valid = [x for x in self.metrics() if x.get("split") == "valid"]
        if any("eval_pass" in x for x in valid):
            found = [x for x in valid if x.get("eval_pass") == valid_pass]
            return (found[-1] if found else None), None
        found = [x for x in valid if self.schedule.pass_at(x["iteration"]) == valid_pass]
        if not found:
            return None, None
        pooled = found[-1]["iteration"] >= self.schedule.train_iters
        return found[-1], POOLED_NOTE if pooled else None

    def tokens_seen(self, iteration: int) -> int:
        """Training tokens consumed up to ``iteration`` (a constant global batch is assumed:
        Megatron's ``--rampup-batch-size`` is not modelled)."""
        return iteration * self.schedule.global_batch_size * self.model.seq_length

    def select(self, spec: str) -> list[int]:
        """Checkpoint iterations for ``ITER=``: ``all``, ``latest`` or a comma list."""
        available = self.checkpoints()
        if not available:
            raise EvalError(f"{self.path} has no complete checkpoint under {self.checkpoints_dir}")
        if spec in ("", "all"):
            return available
        if spec == "latest":
            return available[-1:]
        try:
            wanted = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise EvalError(
                f"ITER must be all, latest or iterations like 100,200; got {spec!r}"
            ) from None
        missing = [i for i in wanted if i not in available]
        if missing or not wanted:
            raise EvalError(
                f"no checkpoint iter_{missing[0] if missing else spec} in {self.checkpoints_dir}; "
                f"available: {', '.join(map(str, available))}"
            )
        return sorted(set(wanted))


def _one(flags: dict, name: str, default: str | None = None) -> str:
    values = flags.get(name)
    if values is None:
        if default is None:
            raise EvalError(f"command.txt has no {name}; cannot rebuild the run")
        return default
    if len(values) != 1:
        raise EvalError(f"command.txt: {name} {' '.join(values)} is not supported (one value)")
    return values[0]


def _int(flags: dict, name: str, default: int | None = None) -> int:
    text = _one(flags, name, None if default is None else str(default))
    try:
        return int(text)
    except ValueError:
        raise EvalError(f"command.txt: {name} must be an integer, got {text!r}") from None


def _model(flags: dict) -> LlamaConfig:
    for flag, what in _UNSUPPORTED.items():
        if flag in flags:
            raise EvalError(f"the run uses {flag} ({what}), which eval/ does not support")
    if _one(flags, "--normalization", "LayerNorm") != "RMSNorm":
        raise EvalError("the run does not use --normalization RMSNorm; eval/ supports Llama only")
    if _one(flags, "--position-embedding-type", "learned_absolute") != "rope":
        raise EvalError("the run does not use RoPE; eval/ supports Llama models only")
    if float(_one(flags, "--rotary-percent", "1.0")) != 1.0:
        raise EvalError("the run uses --rotary-percent < 1, which eval/ does not support")
    for switch in ("--swiglu", "--disable-bias-linear", "--untie-embeddings-and-output-weights"):
        if switch not in flags:
            raise EvalError(f"the run lacks {switch}; eval/ supports Llama models only")
    heads = _int(flags, "--num-attention-heads")
    groups = (
        _int(flags, "--num-query-groups", heads) if "--group-query-attention" in flags else heads
    )
    hidden = _int(flags, "--hidden-size")
    try:
        cfg = LlamaConfig(
            num_layers=_int(flags, "--num-layers"), hidden_size=hidden,
            ffn_hidden_size=_int(flags, "--ffn-hidden-size"), num_attention_heads=heads,
            num_query_groups=groups, seq_length=_int(flags, "--seq-length"),
            rotary_base=_int(flags, "--rotary-base", 10000),
            init_method_std=float(_one(flags, "--init-method-std", "0.02")),
            norm_epsilon=float(_one(flags, "--norm-epsilon", "1e-5")),
        )  # fmt: skip
    except ValueError as err:
        raise EvalError(f"command.txt: {err}") from None
    if _int(flags, "--kv-channels", cfg.kv_channels) != cfg.kv_channels:
        raise EvalError("the run sets --kv-channels != hidden / heads; eval/ does not support it")
    return cfg


def load_run(name: str) -> RunDir:
    """Read a run directory; raises EvalError naming what is missing or unsupported."""
    path = resolve_run(name)
    if not path.is_dir():
        raise EvalError(
            f"run directory {path} does not exist (RUN is a name under runs/ or a path)"
        )
    command = path / "command.txt"
    if not command.is_file():
        raise EvalError(f"{path} has no command.txt; is it a run directory from make pretrain?")
    flags = parse_command(command.read_text())
    model = _model(flags)
    schedule = Schedule(
        seed=_int(flags, "--seed", 1234), micro_batch_size=_int(flags, "--micro-batch-size"),
        global_batch_size=_int(flags, "--global-batch-size"),
        train_iters=_int(flags, "--train-iters"),
        eval_interval=_int(flags, "--eval-interval", 1000),
        eval_iters=_int(flags, "--eval-iters", 100),
    )  # fmt: skip
    prefixes = {}
    for split in ("train", "valid", "test"):
        prefix = _one(flags, f"--{split}-data-path")
        if not Path(prefix + ".idx").is_file():
            raise EvalError(f"dataset {prefix}.idx (from command.txt) is missing")
        prefixes[split] = prefix
    tokenizer_dir = Path(_one(flags, "--tokenizer-model"))
    if not tokenizer_dir.is_dir():
        raise EvalError(f"tokenizer folder {tokenizer_dir} (from command.txt) is missing")
    record = path / "launch.json"
    launch = json.loads(record.read_text()) if record.is_file() else {}
    # launch.json holds the padded model vocabulary (what the checkpoint's embedding has).
    vocab = launch.get("vocab") or _int(flags, "--vocab-size")
    local = path / "checkpoints"
    checkpoints_dir = local if local.is_dir() else Path(_one(flags, "--save", str(local)))
    return RunDir(
        path=path, flags=flags, model=model, schedule=schedule, vocab_size=vocab,
        prefixes=prefixes, tokenizer_dir=tokenizer_dir, checkpoints_dir=checkpoints_dir,
        bf16="--bf16" in flags, reg=_one(flags, "--jreg-reg", "jreg"),
        lam=float(_one(flags, "--jreg-lambda", "0.1")),
        weights=_one(flags, "--jreg-weights", "uniform"),
    )  # fmt: skip
