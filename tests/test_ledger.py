"""The test upstream itself: it stops at once, so every test that uses it ends promptly."""

from __future__ import annotations

import socket

from tests.support.ledger import LedgerUpstream


def test_ledger_upstream_threads_have_ended_when_it_exits() -> None:
    up = LedgerUpstream()
    with up, socket.create_connection(("127.0.0.1", up.port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
        assert len(up.wait_for(1)) == 1
    assert not any(thread.is_alive() for thread in up._threads)
