"""``make import``: a Hugging Face Llama / Qwen2 folder -> a Megatron ``torch_dist`` checkpoint.

The inverse of ``eval.export``. The model config comes from the folder's ``config.json``
(``model_config``), which refuses, one line each, anything the Llama builder cannot reproduce
exactly: another architecture or activation, RoPE scaling other than llama3 with Megatron's fixed
parameters (``megatron/core/models/common/embeddings/rotary_pos_embedding.py``
``_apply_scaling``: low/high frequency factors 1 and 4, original context 8192), sliding-window
attention, biases other than Qwen2's q/k/v ones. The weights map with ``eval.convert`` (one key
table for both directions). The vocabulary is kept as the model has it when it is a multiple of
``VOCAB_MULTIPLE`` (Llama-2 32000, Llama-3 128256, Qwen2 151936 are; every TP up to 128 divides
it), else padded with zero rows to the next multiple: a padding row scores 0, and its share of the
softmax would make the imported model's loss differ from the released one's (768 rows, were it
padded to the launcher's multiple of 1024 as a run from scratch is).

Writes ``<out>/iter_0000000/`` (dist-checkpointing reshards it into any TP/PP layout when loaded),
the tracker file, and ``<out>/import.json`` (source folder, model config, vocabulary sizes).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from common.files import TRACKER
from eval.convert import LLAMA3_FIXED
from eval.rundir import EvalError
from megatron_ext.config import LlamaConfig

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
IMPORT_FILE = "import.json"


def _rope(config: dict) -> tuple[float, float | None]:
    """(rope base, llama3 scaling factor or None) from a 4.x or 5.x ``config.json``."""
    rope = dict(config.get("rope_scaling") or {})
    rope.update(config.get("rope_parameters") or {})
    base = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return base, None
    if kind != "llama3":
        raise EvalError(f"RoPE scaling type {kind!r} is not supported (only llama3)")
    for key, want in LLAMA3_FIXED.items():
        if float(rope.get(key, -1)) != want:
            raise EvalError(f"llama3 RoPE with {key}={rope.get(key)} is not supported "
                            f"(Megatron fixes it to {want:g})")  # fmt: skip
    return base, float(rope["factor"])


def model_config(config: dict) -> LlamaConfig:
    """The ``LlamaConfig`` of an HF ``config.json``; EvalError for what we cannot build exactly."""
    archs = config.get("architectures") or [config.get("model_type", "?")]
    family = ARCHITECTURES.get(archs[0])
    if family is None:
        raise EvalError(f"architecture {archs[0]} is not supported "
                        f"(only {', '.join(ARCHITECTURES)})")  # fmt: skip
    if config.get("hidden_act", "silu") != "silu":
        raise EvalError(f"activation {config['hidden_act']} is not supported (only silu)")
    if config.get("mlp_bias") or (family == "llama" and config.get("attention_bias")):
        raise EvalError("attention output / MLP biases are not supported")
    if family == "qwen2" and config.get("use_sliding_window"):
        raise EvalError("sliding-window attention is not supported")
    base, factor = _rope(config)
    if float(base) != int(base):
        raise EvalError(f"RoPE base {base} is not an integer")
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim * heads != config["hidden_size"]:
        raise EvalError(f"head_dim={head_dim} x {heads} heads != hidden_size (not supported)")
    return LlamaConfig(
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        ffn_hidden_size=config["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=config.get("num_key_value_heads") or heads,
        seq_length=config.get("max_position_embeddings", 4096),
        rotary_base=int(base),
        init_method_std=config.get("initializer_range", 0.02),
        norm_epsilon=config.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2",
        rope_scaling_factor=factor,
    )


def read_hf(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``config.json`` and all safetensors weights of ``folder``."""
    from safetensors.torch import load_file

    path = folder / "config.json"
    if not path.is_file():
        raise EvalError(f"{folder} has no config.json")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise EvalError(f"{folder} has no *.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(f))
    return json.loads(path.read_text()), weights


VOCAB_MULTIPLE = 128


def import_hf(folder: Path, out: Path, dtype: str = "float32") -> Path:
    """Write the Megatron checkpoint of HF ``folder`` under ``out``; returns ``out``."""
    config, hf_weights = read_hf(folder)
    cfg = model_config(config)
    vocab = -(-config["vocab_size"] // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = build(cfg, vocab, torch_dtype)
    from eval.convert import megatron_state_dict

    try:
        state = megatron_state_dict(hf_weights, cfg, vocab)
    except (KeyError, ValueError) as err:
        raise EvalError(f"{folder}: {err}") from err
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise EvalError(f"{folder}: weights missing {missing[:3]} / unexpected "
                        f"{result.unexpected_keys[:3]}")  # fmt: skip
    save(model, out)
    record = {"source": str(folder.resolve()), "model": dataclasses.asdict(cfg),
              "hf_vocab_size": config["vocab_size"], "vocab_size": vocab, "dtype": dtype}  # fmt: skip
    (out / IMPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def build(cfg: LlamaConfig, vocab: int, dtype: torch.dtype):
    """A one-process Megatron model of ``cfg`` (``eval.megatron_io``; patches torch for CPU)."""
    from eval import megatron_io
    from megatron_ext.model import build_gpt_model, transformer_config
    from megatron_ext.reg import JregRuntime
    from megatron_ext.regconfig import JregConfig

    megatron_io.init(0)
    runtime = JregRuntime(JregConfig(reg="none", num_layers=cfg.num_layers))
    config = transformer_config(cfg, params_dtype=dtype)
    return build_gpt_model(cfg, config, runtime, vocab, use_te=False)


def save(model, out: Path) -> None:
    """``out/iter_0000000`` as dist-checkpointing writes it, written under a temporary name."""
    from megatron.core import dist_checkpointing

    final = out / "iter_0000000"
    tmp = out / "iter_0000000.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dist_checkpointing.save({"model": model.sharded_state_dict()}, str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (out / TRACKER).write_text("0\n")


def load(out: Path, dtype: torch.dtype = torch.float32):
    """The imported model of ``out`` (a test and ``INIT=`` helper): config from ``import.json``."""
    from megatron.core import dist_checkpointing

    record = json.loads((out / IMPORT_FILE).read_text())
    cfg = LlamaConfig(**record["model"])
    model = build(cfg, record["vocab_size"], dtype)
    ckpt = str(out / "iter_0000000")
    sharded = {"model": model.sharded_state_dict()}
    state = dist_checkpointing.load(sharded, ckpt)
    model.load_state_dict(state["model"], strict=False)
    return model.eval(), record
