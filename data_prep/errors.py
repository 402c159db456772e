"""Errors that reach the user as one line.

Everything a user can get wrong (paths, fields, tokenizers, existing outputs) raises `DataError`
with a message that names the fix; the CLI prints it as `error: ...` and exits 2, and training
calls `validate_dataset` and lets the same message surface. It subclasses ValueError so callers
that only know "bad input" can still catch it.
"""


class DataError(ValueError):
    """Bad input or bad on-disk state, described in one line that says how to fix it."""


class BuildInterrupted(RuntimeError):
    """A build stopped on purpose before finishing (`stop_after_shards`); re-running resumes it."""
