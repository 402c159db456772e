"""Data preparation: corpus -> tokenizer -> Megatron indexed dataset (+ manifest).

`python -m data_prep build` writes `data/<name>/` (train/valid/test .bin/.idx, a Hugging Face
tokenizer directory and manifest.json); `python -m data_prep validate` checks it cheaply, and
training calls `data_prep.validate.validate_dataset`. Modules import heavy libraries (megatron,
transformers, datasets) lazily so worker processes and the `make data` no-op stay fast.
"""

FORMAT_VERSION = 1
"""Bumped when the on-disk layout or the meaning of the manifest changes."""
