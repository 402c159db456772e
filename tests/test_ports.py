"""common.ports: rendezvous ports come from below the kernel's ephemeral range (a port from
bind(0) is ephemeral and can be taken by another process's outgoing connection before the
trainer binds it: EADDRINUSE in CI), are free, and a missing range falls back to the kernel."""

from __future__ import annotations

import socket

from common.ports import SPAN, ephemeral_low, free_port


def test_port_is_below_the_ephemeral_range_and_free(tmp_path):
    ranges = tmp_path / "range"
    ranges.write_text("40000\t60999\n")
    ports = {free_port(ranges) for _ in range(20)}
    assert all(40000 - SPAN <= p < 40000 for p in ports) and len(ports) > 1  # drawn, not fixed
    port = ports.pop()
    with socket.socket() as sock:
        sock.bind(("", port))  # free on every interface


def test_unreadable_range_falls_back_to_the_kernel(tmp_path):
    assert ephemeral_low(tmp_path / "missing") is None
    (tmp_path / "bad").write_text("n/a")
    assert ephemeral_low(tmp_path / "bad") is None
    assert 0 < free_port(tmp_path / "missing") < 65536


def test_a_held_port_is_never_returned(tmp_path):
    ranges = tmp_path / "range"
    ranges.write_text("3100 60999")  # [1024, 3100): some of these are held below
    held = []
    for port in range(3090, 3100):
        sock = socket.socket()
        try:
            sock.bind(("", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    try:
        taken = {s.getsockname()[1] for s in held}
        assert not {free_port(ranges) for _ in range(200)} & taken
    finally:
        for sock in held:
            sock.close()
