"""Hugging Face tokenizer directories equivalent to SentencePiece, tiktoken or HF inputs.

The eval side loads `AutoTokenizer.from_pretrained(data/<name>/tokenizer)`; this module writes
that directory: `tokenizer.json` (the fast-tokenizer pipeline), `tokenizer_config.json` with
the generic fast class (Llama/Mistral classes rebuild their own pipeline in transformers 5 and
ignore ours) and `split_special_tokens` (special-token strings inside documents stay text, as
in the native encoders), plus megatron-core's `tokenizer_metadata.json`. Equivalence is not
assumed: data_prep.tokenizer.verify_export checks ids on held-out text.
"""

import shutil
from pathlib import Path

from data_prep.encoders import LLAMA3_PATTERN, MODEL_FILES
from data_prep.errors import DataError
from data_prep.util import write_json


def _write_hf_config(
    out_dir: Path, *, bos: str | None, eos: str, unk: str | None, pad: str | None
) -> None:
    specials = {
        k: v
        for k, v in [("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)]
        if v
    }
    write_json(
        out_dir / "tokenizer_config.json",
        {
            # Generic fast class: Llama/Mistral classes rebuild their own pipeline in transformers 5.
            "tokenizer_class": "PreTrainedTokenizerFast",
            # Special-token strings inside documents stay text, as in the native encoders.
            "split_special_tokens": True,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
            **specials,
        },
    )
    write_json(out_dir / "special_tokens_map.json", specials)


def write_megatron_metadata(out_dir: Path) -> None:
    """Lets `MegatronTokenizer.from_pretrained(tokenizer_path=dir)` load it without arguments."""
    write_json(
        out_dir / "tokenizer_metadata.json",
        {
            "library": "huggingface",
            "class_name": None,
            "class_path": None,
            "model_type": "gpt",
            "chat_template": None,
        },
    )


def export_sentencepiece(model_path: Path, out_dir: Path) -> dict:
    """Write tokenizer.json (+ config) equivalent to a SentencePiece BPE model."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers

    proto = pb.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
        raise DataError(f"TOKENIZER {model_path}: only BPE SentencePiece models are supported")
    piece_type = pb.ModelProto.SentencePiece
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    # SentencePiece BPE merges the adjacent pair whose union has the highest score; a BPE
    # merge list ranked by that score reproduces it.
    ranked = []
    for i, p in enumerate(proto.pieces):
        if p.type == piece_type.NORMAL and len(p.piece) > 1:
            s = p.piece
            ranked += [
                (-p.score, i, s[:k], s[k:])
                for k in range(1, len(s))
                if s[:k] in vocab and s[k:] in vocab
            ]
    ranked.sort()
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(a, b) for *_, a, b in ranked],
            unk_token=unk,
            byte_fallback=proto.trainer_spec.byte_fallback,
            fuse_unk=True,
        )
    )
    norm = proto.normalizer_spec
    steps = []
    if norm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    if norm.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    tok.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(
        dec + ([decoders.Strip(" ", 1, 0)] if norm.add_dummy_prefix else [])
    )
    controls = [p.piece for p in proto.pieces if p.type in (piece_type.CONTROL, piece_type.UNKNOWN)]
    tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in controls])
    user = [p.piece for p in proto.pieces if p.type == piece_type.USER_DEFINED]
    tok.add_tokens([AddedToken(u, special=False, normalized=False) for u in user])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    if model_path.resolve() != (out_dir / MODEL_FILES["sentencepiece"]).resolve():
        shutil.copyfile(model_path, out_dir / MODEL_FILES["sentencepiece"])
    spec = proto.trainer_spec
    names = {
        i: proto.pieces[i].piece
        for i in (spec.bos_id, spec.eos_id, spec.pad_id, spec.unk_id)
        if i >= 0
    }
    if spec.eos_id < 0:
        raise DataError(
            f"TOKENIZER {model_path} has no end-of-sequence piece to mark document ends"
        )
    _write_hf_config(
        out_dir,
        bos=names.get(spec.bos_id),
        eos=names[spec.eos_id],
        unk=names.get(spec.unk_id),
        pad=names.get(spec.pad_id),
    )
    return {
        "vocab_size": len(proto.pieces),
        "bos_id": _id(spec.bos_id),
        "eos_id": spec.eos_id,
        "pad_id": _id(spec.pad_id),
        "unk_id": _id(spec.unk_id),
    }


def _id(i: int) -> int | None:
    return i if i >= 0 else None


def export_tiktoken(path: Path, out_dir: Path) -> dict:
    """Hugging Face export of a Llama-3 style tiktoken file (+ its 256 reserved specials)."""
    from tiktoken.load import load_tiktoken_bpe
    from transformers.convert_slow_tokenizer import TikTokenConverter

    n = len(load_tiktoken_bpe(str(path)))
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ]
    specials = named + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(named))]
    tok = TikTokenConverter(
        vocab_file=str(path), pattern=LLAMA3_PATTERN, extra_special_tokens=specials
    ).converted()
    tok.post_processor = None  # no BOS: documents in the .bin start without one
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    shutil.copyfile(path, out_dir / MODEL_FILES["tiktoken"])
    _write_hf_config(out_dir, bos=specials[0], eos=specials[1], unk=None, pad=specials[4])
    return {
        "vocab_size": n + len(specials),
        "bos_id": n,
        "eos_id": n + 1,
        "pad_id": n + 4,
        "unk_id": None,
    }


def export_huggingface(path: Path, out_dir: Path) -> dict:
    """Re-save a Hugging Face tokenizer as AutoTokenizer sees it (its backend is what we encode with)."""
    from transformers import AutoTokenizer

    src = path if path.is_dir() else path.parent
    try:
        hf = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError for broken dirs
        raise DataError(
            f"TOKENIZER {src} is not a loadable Hugging Face tokenizer: {str(e).splitlines()[0]}"
        ) from e
    if hf.eos_token_id is None:
        raise DataError(f"TOKENIZER {src} has no eos token to mark document ends")
    hf.save_pretrained(str(out_dir))
    return {
        "vocab_size": len(hf),
        "bos_id": hf.bos_token_id,
        "eos_id": hf.eos_token_id,
        "pad_id": hf.pad_token_id,
        "unk_id": hf.unk_token_id,
    }
