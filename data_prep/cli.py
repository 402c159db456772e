"""`python -m data_prep build|adopt|validate|bench|fetch`: thin argparse over the library;
`python -m data_prep make KEY=value ...` takes `make data`'s settings (data_prep.settings).

User errors (DataError, invalid settings) print one line `error: ...` on stderr and exit 2,
without a traceback; an interrupted build exits 130 and says how to resume.
"""

import argparse
import glob
import json
import logging
import shlex
import sys
from pathlib import Path

from data_prep.errors import BuildInterrupted, DataError
from data_prep.util import DEFAULT_CACHE_DIR

log = logging.getLogger("data_prep")


def _split(value: str) -> tuple[float, float, float]:
    parts = [float(x) for x in value.replace("/", ",").split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected three numbers, e.g. 98,1,1")
    return parts[0], parts[1], parts[2]


def _default_name(corpus: list[str]) -> str:
    """`default` for the embedded corpus, else the last literal part of the first spec."""
    if corpus == ["default"]:
        return "default"
    first = corpus[0].replace(",", " ").split()[0].removeprefix("embedded:")
    if first.startswith("hf:"):  # repo name + config: hf:org/fineweb-edu:sample-10BT
        first = "-".join(
            f for f in [first[3:].split(":")[0].rstrip("/"), *first.split(":")[2:3]] if f
        )
    parts = [p for p in first.split("/") if p and not glob.has_magic(p)]
    stem = parts[-1].split(".")[0] if parts else ""  # docs.jsonl.gz -> docs
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in stem).strip("-_") or "corpus"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser(
        "build", help="corpus -> tokenizer -> data/<name>/ (resumable, no-op when up to date)"
    )
    b.add_argument(
        "--corpus",
        action="append",
        default=None,
        help="default | embedded:wiki+shakespeare+sotu+moby-dick+kjv | fineweb-edu | "
        "hf:REPO[:CONFIG[:SPLIT]] | .jsonl/.parquet/.txt files, globs, dirs (repeatable)",
    )
    b.add_argument("--name", help="output directory name (default: derived from the corpus)")
    b.add_argument("--out-root", type=Path, default=Path("data"))
    b.add_argument(
        "--vocab-size", type=int, default=None, help="vocab of the trained tokenizer (default 8192)"
    )
    b.add_argument(
        "--tokenizer",
        type=Path,
        help="existing tokenizer: SentencePiece .model, HF dir, tiktoken file",
    )
    b.add_argument("--text-field", default="text")
    b.add_argument(
        "--split", type=_split, default=(0.98, 0.01, 0.01), help="train,valid,test fractions"
    )
    b.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    b.add_argument(
        "--force", action="store_true", help="overwrite an existing output built differently"
    )
    b.add_argument("--max-docs", type=int, help="keep only the first N input records")
    b.add_argument("--shard-mb", type=float, help="input MB per shard (default: auto)")
    b.add_argument("--tokenizer-train-mb", type=float, default=256.0)
    b.add_argument(
        "--txt-docs",
        choices=["file", "line"],
        default="file",
        help="one .txt document per file or line",
    )
    b.add_argument("--licence", help="licence to record for local/HF sources")
    b.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    b.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    b.add_argument("--stop-after-shards", type=int, help=argparse.SUPPRESS)  # resume tests

    a = sub.add_parser(
        "adopt",
        help="existing Megatron .bin/.idx + their tokenizer -> data/<name>/ (no re-tokenizing)",
    )
    a.add_argument("--prefix", action="append", required=True, help="dataset prefix (repeatable)")
    a.add_argument("--tokenizer", type=Path, help="the tokenizer the ids come from (required)")
    a.add_argument("--name", help="output directory name (default: the first prefix's name)")
    a.add_argument("--out-root", type=Path, default=Path("data"))
    a.add_argument("--split", type=_split, default=(0.98, 0.01, 0.01), help="train,valid,test")
    a.add_argument("--licence", help="licence to record")
    a.add_argument("--force", action="store_true", help="overwrite an output made differently")

    v = sub.add_parser("validate", help="check data/<name>/ (what training runs first)")
    v.add_argument("path", type=Path)
    v.add_argument(
        "--deep", action="store_true", help="also read every document (EOD placement, ids < vocab)"
    )

    f = sub.add_parser("fetch", help="download the embedded sources into the cache (no build)")
    f.add_argument("--sources", default=None, help="names joined by +, default: the default set")
    f.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)

    k = sub.add_parser(
        "bench", help="tokens/s of the pipeline vs the bare tokenizer on a built dataset's corpus"
    )
    k.add_argument("path", type=Path)
    k.add_argument("--repeats", type=int, default=3)
    k.add_argument("--workers", type=int, default=None)
    k.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    k.add_argument("--json", type=Path, help="also write the results here")
    return p


def _build(args: argparse.Namespace, argv: list[str]) -> None:
    from data_prep.build import BuildConfig, build

    corpus = args.corpus or ["default"]
    if args.tokenizer is not None and args.vocab_size is not None:
        log.warning("--vocab-size is ignored: the vocabulary comes from --tokenizer")
    kwargs = {"workers": args.workers} if args.workers else {}
    cfg = BuildConfig(
        corpus=corpus,
        name=args.name or _default_name(corpus),
        out_root=args.out_root,
        text_field=args.text_field,
        vocab_size=args.vocab_size or 8192,
        tokenizer=args.tokenizer,
        split=args.split,
        force=args.force,
        max_docs=args.max_docs,
        shard_mb=args.shard_mb,
        tokenizer_train_mb=args.tokenizer_train_mb,
        txt_docs=args.txt_docs,
        licence=args.licence,
        cache_dir=args.cache_dir,
        created_by="python -m data_prep " + shlex.join(argv),
        stop_after_shards=args.stop_after_shards,
        progress=args.progress,
        **kwargs,
    )
    try:
        build(cfg)
    except (BuildInterrupted, KeyboardInterrupt) as e:
        print(
            f"interrupted ({str(e) or 'Ctrl-C'}); re-run the same command to resume",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["make"]:
        from data_prep.settings import to_argv

        try:
            argv = to_argv(argv[1:])
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("data_prep: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    log.propagate = False  # libraries' own INFO logs (megatron, datasets) stay quiet
    try:
        if args.command == "build":
            _build(args, argv)
        elif args.command == "adopt":
            from data_prep.adopt import AdoptConfig, adopt

            if args.tokenizer is None:
                raise DataError("ADOPT needs TOKENIZER=<the tokenizer its token ids come from>")
            prefixes = [Path(p) for v in args.prefix for p in v.split(",") if p]
            adopt(
                AdoptConfig(
                    prefixes=prefixes, tokenizer=args.tokenizer, out_root=args.out_root,
                    name=args.name
                    or _default_name([str(prefixes[0]) if prefixes else ""]).removesuffix(
                        "_text_document"
                    ),
                    split=args.split, force=args.force, licence=args.licence,
                    created_by="python -m data_prep " + shlex.join(argv),
                )
            )  # fmt: skip
        elif args.command == "validate":
            from data_prep.validate import validate_dataset

            m = validate_dataset(args.path, deep=args.deep)
            splits = ", ".join(
                f"{k} {v['num_docs']:,} docs/{v['num_tokens']:,} tokens"
                for k, v in m["splits"].items()
            )
            print(
                f"ok: {args.path} ({splits}; tokenizer {m['tokenizer']['kind']}, vocab {m['tokenizer']['vocab_size']})"
            )
        elif args.command == "fetch":
            from data_prep import embedded

            names = args.sources.split("+") if args.sources else None
            for path, info in embedded.resolve(names, args.cache_dir):
                print(
                    f"{info['name']}: {info['num_docs']:,} docs, {info['text_bytes'] / 1e6:.1f} MB -> {path}"
                )
        else:
            from data_prep.bench import bench

            result = bench(
                args.path, repeats=args.repeats, workers=args.workers, cache_dir=args.cache_dir
            )
            text = json.dumps(result, indent=1)
            print(text)
            if args.json:
                args.json.write_text(text + "\n")
    except (DataError, ValueError, OSError) as e:
        if args.verbose:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
