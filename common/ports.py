"""A free TCP port for a rendezvous (``MASTER_PORT``), chosen below the kernel's ephemeral range.

The usual trick, ``bind(0)`` then close, returns an ephemeral port, and in the seconds before the
trainer binds it (imports take ~7 s) the kernel may hand the same port to an outgoing connection
of another process on the machine: CI saw ``EADDRINUSE`` for a single-process run while the other
test worker's ranks were connecting (2026-12-04). A port below the ephemeral range is never handed
out that way; it is picked at random and checked free on every interface, so two runs started
together collide only if they draw the same port (1 in ~12,000).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
SPAN = 12_000
"""Ports drawn from [low - SPAN, low), low = the first ephemeral port (32768 on Linux)."""


def ephemeral_low(path: Path = RANGE_FILE) -> int | None:
    """The first port of the kernel's ephemeral range, None where it cannot be read."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
        return True


def free_port(path: Path = RANGE_FILE) -> int:
    """A port no socket holds now, below the ephemeral range when that range is known (and
    starts above 2048); else the kernel's own choice."""
    low = ephemeral_low(path)
    if low is not None and low > 2048:
        first = max(1024, low - SPAN)
        for port in random.SystemRandom().sample(range(first, low), min(64, low - first)):
            if _bindable(port):
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
