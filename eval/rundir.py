"""What a pretraining run directory holds, read from its files only (no Megatron import).

``run_config.json`` (``megatron_ext.runconfig``) holds the typed configs the run was started with
(user ``ARGS`` applied), so the architecture, the data, the batch schedule and the seed come from
it rather than from today's recipes; runs recorded before it are read from ``command.txt`` by the
same module. Validation passes are numbered as Megatron consumes its validation
iterator: pass ``e`` (1-based) reads samples ``[(e-1) E G, e E G)`` of a validation GPTDataset
built for ``(train_iters // eval_interval + 1) E G`` samples, E = eval_iters, G = global batch
(``megatron/training/training.py``: ``get_train_valid_test_num_samples`` and the
``consumed_valid_samples`` restored on resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.files import REPO, TRACKER, read_json, read_jsonl
from common.files import run_dir as resolve_run
from megatron_ext.config import LlamaConfig
from megatron_ext.runconfig import RunConfig, RunConfigError, parse_flags
from megatron_ext.runconfig import load as load_run_config

__all__ = ["REPO", "TRACKER", "resolve_run"]
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
}  # q/k/v biases (--add-qkv-bias), tied embeddings and llama3 RoPE it builds (imported models)


class EvalError(ValueError):
    """A user error: printed as one line ``error: ...``, exit code 2."""


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
                raise EvalError(f"run config: {name} must be positive, got {getattr(self, name)}")

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
    config: RunConfig = field(repr=False)
    """``run_config.json`` (or, for older runs, what ``command.txt`` says)."""
    schedule: Schedule
    """Batches and validation passes."""
    checkpoints_dir: Path
    """Where ``iter_*`` folders are."""

    @property
    def model(self) -> LlamaConfig:
        """Architecture."""
        return self.config.model

    @property
    def vocab_size(self) -> int:
        """Padded model vocabulary (rows of the embedding and output layer)."""
        return self.config.vocab_size

    def prefixes(self, split: str) -> list[str]:
        """``split``'s dataset prefixes (``.bin``/``.idx`` without suffix): one, or a blend's
        members in order (their weights: ``config.data.split_blend``)."""
        return self.config.data.split_blend(split)[0]

    @property
    def tokenizer_dir(self) -> Path:
        """The dataset's tokenizer folder (loads with ``AutoTokenizer``)."""
        return Path(self.config.data.tokenizer_dir)

    @property
    def bos_prepended(self) -> bool:
        """Documents in the training data start with BOS: the dataset manifest's decision
        (``bos_prepended``); data prepared before it was recorded (or a run without the dataset
        folder) had none, as ``make data`` has never prepended one."""
        path = self.config.data.path
        manifest = read_json(Path(path) / "manifest.json") if path else {}
        return bool(manifest.get("bos_prepended", False))

    @property
    def bf16(self) -> bool:
        """The run trained (and saved its weights) in bf16."""
        return self.config.bf16

    @property
    def reg(self) -> str:
        """The regulariser's name (``--jreg-reg``)."""
        return self.config.reg.reg

    @property
    def lam(self) -> float:
        """lambda (``--jreg-lambda``)."""
        return self.config.reg.lam

    @property
    def weights(self) -> str:
        """The layer-weight schedule as written (``--jreg-weights``)."""
        return self.config.weights_spec

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
        return read_jsonl(self.path / "metrics.jsonl")

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


def _check_supported(cfg: RunConfig, flags: dict[str, list[str]]) -> None:
    """EvalError when the flags the run added (ARGS) make a model eval/ cannot rebuild."""
    for flag, what in _UNSUPPORTED.items():
        if flag in flags:
            raise EvalError(f"the run uses {flag} ({what}), which eval/ does not support")
    if flags.get("--normalization", ["RMSNorm"]) != ["RMSNorm"]:
        raise EvalError("the run does not use --normalization RMSNorm; eval/ supports Llama only")
    if flags.get("--position-embedding-type", ["rope"]) != ["rope"]:
        raise EvalError("the run does not use RoPE; eval/ supports Llama models only")
    if float(flags.get("--rotary-percent", ["1.0"])[-1]) != 1.0:
        raise EvalError("the run uses --rotary-percent < 1, which eval/ does not support")
    for switch in ("--add-bias-linear", "--tie-embeddings-and-output-weights"):
        if switch in flags:
            raise EvalError(f"the run uses {switch}; eval/ supports Llama models only")
    kv = flags.get("--kv-channels")
    if kv and int(kv[-1]) != cfg.model.kv_channels:
        raise EvalError("the run sets --kv-channels != hidden / heads; eval/ does not support it")


def load_run(name: str) -> RunDir:
    """Read a run directory; raises EvalError naming what is missing or unsupported."""
    path = resolve_run(name)
    if not path.is_dir():
        raise EvalError(
            f"run directory {path} does not exist (RUN is a name under runs/ or a path)"
        )
    try:
        cfg = load_run_config(path)
    except RunConfigError as err:
        raise EvalError(str(err)) from None
    _check_supported(cfg, parse_flags(cfg.extra_args))
    train = cfg.train
    schedule = Schedule(
        seed=cfg.seed, micro_batch_size=train.micro_batch_size,
        global_batch_size=train.global_batch_size, train_iters=train.train_iters,
        eval_interval=train.eval_interval, eval_iters=train.eval_iters,
    )  # fmt: skip
    for split in ("train", "valid", "test"):
        try:
            prefixes = cfg.data.split_blend(split)[0]
        except KeyError:
            raise EvalError(f"the run config names no {split} dataset") from None
        for prefix in prefixes:
            if not Path(prefix + ".idx").is_file():
                raise EvalError(f"dataset {prefix}.idx (from the run config) is missing")
    if not Path(cfg.data.tokenizer_dir).is_dir():
        raise EvalError(
            f"tokenizer folder {cfg.data.tokenizer_dir} (from the run config) is missing"
        )
    local = path / "checkpoints"
    checkpoints_dir = local if local.is_dir() or not cfg.save_dir else Path(cfg.save_dir)
    return RunDir(path=path, config=cfg, schedule=schedule, checkpoints_dir=checkpoints_dir)
