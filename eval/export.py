"""``make export``: a run's checkpoint (any TP/PP layout) -> a Hugging Face LlamaForCausalLM folder
(Qwen2ForCausalLM for a model with q/k/v biases, e.g. one continued from an imported Qwen2).

Loads the checkpoint into a one-process Megatron model (dist-checkpointing reshards), maps the
weights with ``eval.convert`` and writes ``<out>/hf/iter_<N>/``: ``config.json`` (read alike by
transformers 4.x and 5.x), ``generation_config.json``, ``model.safetensors`` (sharded above 5 GB,
with an index), the dataset's tokenizer folder set to add BOS exactly when the dataset's manifest
says its documents start with one (``eval.export_tokenizer``), and ``export.json`` (where it came
from, and the ``bos_prepended``/``prefix_token_id`` that ``make eval`` hands lm-eval). The folder is written
under a temporary name and renamed when complete, so a half-written export is never mistaken for
one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file
from transformers import GenerationConfig

from eval.convert import hf_config, hf_state_dict, write_hf_config
from eval.export_tokenizer import write_tokenizer
from eval.rundir import RunDir

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def export_dir(out_root: Path, iteration: int) -> Path:
    """Where the export of ``iteration`` goes."""
    return out_root / "hf" / f"iter_{iteration:07d}"


def _save_weights(state: dict[str, torch.Tensor], folder: Path) -> None:
    split = split_torch_state_dict_into_shards(state, max_shard_size="5GB")
    for filename, names in split.filename_to_tensors.items():
        save_file({n: state[n] for n in names}, folder / filename, metadata={"format": "pt"})
        (folder / filename).chmod(0o644)  # safetensors writes 0600; the folder is for sharing
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def export(run: RunDir, iteration: int, out_root: Path, dtype: str = "as-saved") -> Path:
    """Write the HF folder of checkpoint ``iteration``; returns it."""
    # Imported here: it patches torch for CPU (cpu_compat), which must not leak into processes
    # that only need export_dir (the lm-eval harness gave different results with the patches).
    from eval import megatron_io

    megatron_io.init(run.schedule.seed)
    model = megatron_io.load_checkpoint(run, iteration, _DTYPES.get(dtype))
    weights = hf_state_dict(model.state_dict(), run.model)
    del model
    torch_dtype = next(iter(weights.values())).dtype
    final = export_dir(out_root, iteration)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = write_tokenizer(run.tokenizer_dir, tmp, run.bos_prepended)
    ids = {k: tok[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    write_hf_config(tmp, hf_config(run.model, run.vocab_size, torch_dtype, ids))
    GenerationConfig(
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"]
    ).save_pretrained(tmp)
    _save_weights(weights, tmp)
    record = {
        "run": str(run.path),
        "iteration": iteration,
        "checkpoint": str(run.checkpoint_dir(iteration)),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "model_vocab_size": run.vocab_size,
        "tokenizer_vocab_size": tok["tokenizer_vocab_size"],
        "vocab_note": "padded Megatron vocabulary kept: log-probabilities equal training's",
        "bos_prepended": run.bos_prepended,
        "prefix_token_id": tok["prefix_token_id"],
        "tokens_seen": run.tokens_seen(iteration),
    }
    (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final
