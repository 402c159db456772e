"""The export's tokenizer: by default it gives the ids the model was trained on, BOS included or not.

Whether documents start with BOS is one recorded decision: the dataset's manifest
(``bos_prepended``, written by ``make data``; this project's data never has one, each document is
preceded by the previous one's end-of-document token). A tokenizer folder given to ``make data``
may still add BOS by default (a Llama-2/3 ``tokenizer.json`` has a ``TemplateProcessing``
post-processor), and every reader that tokenizes with the defaults (lm-eval's HFLM, vLLM,
``tokenizer(text)``) would then feed the model a token it never saw in front of every text. So the
export rewrites its copy to follow the manifest: special tokens are dropped from the
post-processor (what transformers 4.x and other ``tokenizers`` readers use) and
``add_bos_token``/``add_eos_token`` are written to ``tokenizer_config.json`` (what transformers 5
rebuilds the post-processor from); then the folder is checked by loading it.

The token that conditions the first token of a text (lm-eval's ``prefix_token_id``) is the one
that precedes a document in training: BOS when documents start with it, else end-of-document.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from eval.rundir import EvalError

PROBE = "Export check: the first words of a text."


def _drop_specials(processor: dict | None) -> dict | None:
    """A ``tokenizer.json`` post-processor without the special tokens it adds (None if nothing
    is left but the text itself)."""
    if not processor:
        return None
    kind = processor.get("type")
    if kind == "Sequence":
        kept = [p for p in map(_drop_specials, processor["processors"]) if p]
        return {**processor, "processors": kept} if kept else None
    if kind == "TemplateProcessing":
        single = [x for x in processor["single"] if "SpecialToken" not in x]
        pair = [x for x in processor["pair"] if "SpecialToken" not in x]
        if single == [{"Sequence": {"id": "A", "type_id": 0}}]:
            return None
        return {**processor, "single": single, "pair": pair, "special_tokens": {}}
    return processor  # ByteLevel (offsets only) and others: checked by loading the folder


def write_tokenizer(src: Path, dst: Path, bos_prepended: bool) -> dict[str, int | None]:
    """Copy the tokenizer folder ``src`` into ``dst`` so that it adds BOS exactly when
    ``bos_prepended`` and nothing else; returns its special ids and ``prefix_token_id``."""
    from transformers import AutoTokenizer

    for path in sorted(src.iterdir()):
        if path.is_file():
            shutil.copy2(path, dst / path.name)
    spec_path, config_path = dst / "tokenizer.json", dst / "tokenizer_config.json"
    if spec_path.is_file() and not bos_prepended:
        spec = json.loads(spec_path.read_text())
        spec["post_processor"] = _drop_specials(spec.get("post_processor"))
        spec_path.write_text(json.dumps(spec, ensure_ascii=False, indent=2) + "\n")
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.update(add_bos_token=bos_prepended, add_eos_token=False)
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(dst))
    plain = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos_prepended and bos is None:
        raise EvalError(f"the dataset says documents start with BOS, but {src} has no bos_token")
    want = ([bos] if bos_prepended else []) + plain
    got = tokenizer(PROBE)["input_ids"]
    if got != want:
        raise EvalError(
            f"the exported tokenizer encodes {PROBE!r} as {got[:4]}..., training saw {want[:4]}...; "
            f"its post-processor in {spec_path} adds tokens the export cannot remove"
        )
    return {
        "bos_token_id": bos,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "prefix_token_id": bos if bos_prepended else tokenizer.eos_token_id,
        "tokenizer_vocab_size": len(tokenizer),
    }
