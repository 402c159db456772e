"""Choose, train and export the tokenizer, and prove the export gives the dataset's ids.

Either a SentencePiece BPE model is trained on the corpus (byte fallback, identity
normalisation, whitespace kept, so decode(encode(x)) == x), or an existing tokenizer is used: a
SentencePiece `.model`, a Hugging Face directory (`tokenizer.json`) or a Llama-3 style tiktoken
file. In every case a Hugging Face directory is written that `AutoTokenizer.from_pretrained`
loads offline, and `verify_export` checks on held-out documents (plus awkward probe strings)
that it yields exactly the ids the native encoder writes into the .bin. That check exists
because loading succeeding proves nothing: transformers 5 `LlamaTokenizer(vocab_file=...)`
silently ignores the file, and a folder with only `tokenizer.model` tokenizes wrongly.
"""

import io
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from data_prep.encoders import MODEL_FILES, EncoderSpec, make_encoder
from data_prep.errors import DataError
from data_prep.hf_export import (
    export_huggingface,
    export_sentencepiece,
    export_tiktoken,
    write_megatron_metadata,
)
from data_prep.util import sha256_file, sha256_json

log = logging.getLogger("data_prep")

TRAIN_RECIPE = "sentencepiece-bpe-v1"
"""Names the training settings below; part of the fingerprint, bump when they change."""
MIN_VOCAB = 300
"""256 byte-fallback pieces + <unk>, <s>, </s> + room for the corpus's characters."""
PROBES = [
    "  two leading spaces\n\tand a tab\n\n    four-space indent  ",
    " x",
    "Unicode: naïve café, Ελληνικά, 日本語, emoji 🙂 and \u00a0nbsp",
    "literal specials: <s> </s> <unk> <|begin_of_text|> <|end_of_text|>",
    "windows\r\nline endings\r\n",
    "digits 1234567890 and 3.14159",
]
"""Strings that commonly break slow/fast tokenizer equivalence."""


def detect_kind(path: Path) -> str:
    """Classify an existing tokenizer path, or raise a DataError naming what is accepted."""
    accepted = "expected a SentencePiece .model, a Hugging Face tokenizer directory (tokenizer.json) or a tiktoken BPE file"
    if not path.exists():
        raise DataError(f"TOKENIZER {path} does not exist; {accepted}")
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return "huggingface"
        raise DataError(
            f"TOKENIZER {path} is not a tokenizer: directory without tokenizer.json; {accepted}"
        )
    if path.name == "tokenizer.json":
        return "huggingface"
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_file=str(path))
        return "sentencepiece"
    except (RuntimeError, OSError):
        pass
    with path.open("rb") as f:
        first = f.readline(1000).split()
    if len(first) == 2 and first[1].isdigit() and re.fullmatch(rb"[A-Za-z0-9+/=]+", first[0]):
        return "tiktoken"
    raise DataError(f"TOKENIZER {path} is not a tokenizer; {accepted}")


def source_identity(path: Path) -> dict:
    """Kind and content hash of an existing tokenizer (for the fingerprint and the manifest)."""
    kind = detect_kind(path)
    if kind == "huggingface":
        d = path if path.is_dir() else path.parent
        names = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
        digest = sha256_json({n: sha256_file(d / n) for n in names if (d / n).is_file()})
    else:
        digest = sha256_file(path)
    return {"kind": kind, "path": str(path.resolve()), "sha256": digest}


def _chunk_lines(texts: Iterable[str], max_chars: int = 4000) -> Iterable[str]:
    """Training sentences: non-blank lines, long ones cut at spaces (SentencePiece drops, not
    truncates, sentences over max_sentence_length)."""
    for text in texts:
        for line in text.split("\n"):
            while len(line) > max_chars:
                cut = line.rfind(" ", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                yield line[:cut]
                line = line[cut:]
            if line.strip():
                yield line


def train_sentencepiece(
    texts: Iterable[str], *, vocab_size: int, out_dir: Path, num_threads: int
) -> Path:
    """Train a BPE model whose decode(encode(x)) == x; returns the .model path in out_dir."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_chunk_lines(texts)),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            character_coverage=0.9995,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise _vocab_error(str(e), vocab_size) from e
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model.getvalue())
    # The model records the training thread count; fix it so the file (and its hash) does not
    # depend on the machine's core count. Threads do not change the learned pieces.
    proto.trainer_spec.num_threads = 1
    path = out_dir / MODEL_FILES["sentencepiece"]
    path.write_bytes(proto.SerializeToString())
    return path


def _vocab_error(msg: str, vocab_size: int) -> DataError:
    if m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg):
        need = int(m[2]) + 3  # + unk/bos/eos
        return DataError(
            f"VOCAB={vocab_size} is too small for this corpus: SentencePiece needs at least {need}"
        )
    if m := re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", msg):
        return DataError(
            f"VOCAB={vocab_size} is too large for this corpus: at most {m[2]}; lower VOCAB or add text"
        )
    return DataError(f"SentencePiece training failed: {msg.strip().splitlines()[-1]}")


def prepare_existing(path: Path, out_dir: Path) -> tuple[EncoderSpec, dict]:
    """Export an existing tokenizer into out_dir; returns its encoder and manifest info."""
    identity = source_identity(path)
    kind = identity["kind"]
    export = {
        "sentencepiece": export_sentencepiece,
        "tiktoken": export_tiktoken,
        "huggingface": export_huggingface,
    }
    info = export[kind](path, out_dir)
    write_megatron_metadata(out_dir)
    return EncoderSpec(kind=kind, tokenizer_dir=str(out_dir)), _info(
        kind, out_dir, info, {"existing": identity}
    )


def prepare_trained(
    texts: Iterable[str], *, vocab_size: int, out_dir: Path, num_threads: int, sample: dict
) -> tuple[EncoderSpec, dict]:
    """Train SentencePiece on `texts` and export it; `sample` describes the training text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(
        texts, vocab_size=vocab_size, out_dir=out_dir, num_threads=num_threads
    )
    info = export_sentencepiece(model, out_dir)
    write_megatron_metadata(out_dir)
    trained = {"recipe": TRAIN_RECIPE, "vocab_size": vocab_size, **sample}
    return EncoderSpec(kind="sentencepiece", tokenizer_dir=str(out_dir)), _info(
        "sentencepiece", out_dir, info, {"trained": trained}
    )


def _info(kind: str, out_dir: Path, ids: dict, source: dict) -> dict:
    model_file = MODEL_FILES[kind] if kind != "huggingface" else None
    return {
        "kind": kind,
        "path": "tokenizer",
        "file": "tokenizer.json",
        "sha256": sha256_file(out_dir / "tokenizer.json"),
        "model_file": model_file,
        **ids,
        "eod_id": ids["eos_id"],
        "source": source,
    }


def _describe(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def verify_export(
    spec: EncoderSpec, info: dict, texts: list[str], *, require_roundtrip: bool
) -> int:
    """Check AutoTokenizer(export) == native encoder ids (and round trip); returns #texts checked."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(spec.tokenizer_dir, local_files_only=True)
    if hf.eos_token_id != info["eos_id"] or len(hf) != info["vocab_size"]:
        raise DataError(
            f"exported tokenizer disagrees on eos id/vocab size ({hf.eos_token_id}/{len(hf)} vs "
            f"{info['eos_id']}/{info['vocab_size']}); this is a data_prep bug"
        )
    enc = make_encoder(spec)
    checked = PROBES + texts
    for text, ids in zip(checked, enc.encode_batch(checked), strict=True):
        got = hf(text, add_special_tokens=False)["input_ids"]
        if got != ids:
            i = next(
                (k for k, (a, b) in enumerate(zip(got, ids, strict=False)) if a != b),
                min(len(got), len(ids)),
            )
            raise DataError(
                f"exported Hugging Face tokenizer gives different ids than {spec.kind} on "
                f"{_describe(text)} (first difference at token {i}); use another TOKENIZER"
            )
        if require_roundtrip and not (enc.decode(ids) == text == hf.decode(ids)):
            raise DataError(
                f"tokenizer does not round-trip {_describe(text)}; this is a data_prep bug"
            )
    log.info(
        "tokenizer export verified on %d held-out documents and %d probes", len(texts), len(PROBES)
    )
    return len(checked)
