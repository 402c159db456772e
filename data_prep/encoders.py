"""The fast encoders that produce the token ids written to the dataset.

Each tokenizer kind is encoded with its native library (SentencePiece C++, HF `tokenizers`
Rust, `tiktoken` Rust): that is the fastest path and, for SentencePiece, the reference
implementation. The Hugging Face directory exported next to the data must reproduce these ids
exactly; data_prep.tokenizer checks that on held-out documents. This module is imported by
every worker process, so it imports only the one library it needs, lazily.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Pre-tokenization regex of Llama-3 style tiktoken models (llama_models/llama3/tokenizer.py)."""

MODEL_FILES = {
    "sentencepiece": "tokenizer.model",
    "huggingface": "tokenizer.json",
    "tiktoken": "tiktoken.model",
}
"""File inside the exported tokenizer directory that each kind's encoder reads."""


@dataclass(frozen=True, kw_only=True)
class EncoderSpec:
    """Picklable recipe for building an encoder in a worker process."""

    kind: str
    """sentencepiece | huggingface | tiktoken"""
    tokenizer_dir: str

    @property
    def model_file(self) -> Path:
        return Path(self.tokenizer_dir) / MODEL_FILES[self.kind]


class Encoder(Protocol):
    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, without BOS/EOS."""
        ...

    def decode(self, ids: list[int]) -> str: ...


class _SentencePiece:
    def __init__(self, spec: EncoderSpec, num_threads: int) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(spec.model_file))
        self.num_threads = num_threads

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=self.num_threads)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)


class _HuggingFace:
    def __init__(self, spec: EncoderSpec, num_threads: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(spec.model_file))
        config_path = Path(spec.tokenizer_dir) / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        # transformers sets this from tokenizer_config.json; mirror it so special-token strings
        # inside documents are treated the same way by both.
        self.tok.encode_special_tokens = bool(config.get("split_special_tokens", False))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)


class _TikToken:
    def __init__(self, spec: EncoderSpec, num_threads: int) -> None:
        self.enc = tiktoken_encoding(spec.model_file)
        self.num_threads = num_threads

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # encode_ordinary: special-token strings inside documents are plain text, not controls.
        return self.enc.encode_ordinary_batch(texts, num_threads=self.num_threads)

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)


def tiktoken_encoding(path: Path):
    """A tiktoken Encoding over the ranks in `path`, with the Llama-3 pattern and no specials."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(path))
    return tiktoken.Encoding(
        name=path.name, pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )


def make_encoder(spec: EncoderSpec, num_threads: int = 1) -> Encoder:
    """Build the encoder for `spec`; `num_threads` > 1 only for in-process batch encoding."""
    cls = {"sentencepiece": _SentencePiece, "huggingface": _HuggingFace, "tiktoken": _TikToken}[
        spec.kind
    ]
    return cls(spec, num_threads)
