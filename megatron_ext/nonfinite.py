"""Recognising Megatron's NaN/inf stop by what it is, not by a substring of any error.

With reruns disabled, Megatron's rerun state machine raises ``RuntimeError(f"Rank {rank}, node
{node}, device {device}, iteration {i}: Unexpected result {result} (message='{message}')")``
(megatron/core/rerun_state_machine.py:527-534) when a validated result is rejected; the NaN/inf
checks are the gradient-norm checks of megatron/core/distributed/param_and_grad_buffer.py:349-363
("found NaN in local grad norm ...", "found Inf in local grad norm ...") and the loss check
documented at rerun_state_machine.py:499-502 ("loss is NaN"). With reruns enabled it exits with
EXIT_CODE_RESUME_TO_DISAMBIGUATE / EXIT_CODE_FAILED_ON_RESULT_VALIDATION instead (train.py).
Any other RuntimeError, whatever words it contains ("info", "inference", ...), is re-raised.
"""

from __future__ import annotations

import re

_REJECTED = re.compile(r"iteration \d+: Unexpected result (?P<result>.*) \(message='(?P<msg>.*)'\)")
_NONFINITE_VALUE = re.compile(r"(?<![A-Za-z])-?(nan|inf)(?![A-Za-z])", re.IGNORECASE)
_NONFINITE_MESSAGE = re.compile(r"\b(found (NaN|Inf)|is (NaN|Inf))\b", re.IGNORECASE)


def is_nonfinite_error(err: BaseException) -> bool:
    """True when ``err`` is Megatron rejecting a NaN or infinite loss or gradient norm."""
    if not isinstance(err, RuntimeError):
        return False
    match = _REJECTED.search(str(err))
    if match is None:
        return False
    return bool(_NONFINITE_MESSAGE.search(match["msg"]) or _NONFINITE_VALUE.search(match["result"]))
