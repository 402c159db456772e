"""Deterministic document-level train/valid/test assignment by content hash.

Hashing the text (not the position) makes the split independent of sharding, worker count
and corpus order, and puts exact duplicates into the same split so none leaks into held-out.
"""

import hashlib

SPLITS = ("train", "valid", "test")


def thresholds(fractions: tuple[float, float, float]) -> tuple[int, int]:
    """64-bit hash cut points: hash < t0 -> train, < t1 -> valid, else test."""
    total = sum(fractions)
    t0 = int(fractions[0] / total * 2**64)
    t1 = int((fractions[0] + fractions[1]) / total * 2**64)
    return t0, t1


def split_of(data: bytes, cuts: tuple[int, int]) -> int:
    """Index into SPLITS for a document's UTF-8 bytes."""
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return 0 if h < cuts[0] else 1 if h < cuts[1] else 2


def utf8(text: str) -> tuple[str, bytes]:
    """(text, its UTF-8 bytes); lone surrogates (possible in JSON) become U+FFFD instead of
    crashing the encoders, which need valid UTF-8."""
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:
        # Round-trip through UTF-16: valid surrogate pairs recombine, lone ones become U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return text, text.encode("utf-8")
