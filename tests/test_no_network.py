"""conftest's autouse `no_network` guard: a test cannot go out, but loopback stays open.

The targets are reserved so that nothing is reached even if the guard broke: a name under ``.invalid`` (RFC 6761)
and an address of TEST-NET-1 (RFC 5737).
"""

from __future__ import annotations

import socket
import urllib.request

import pytest


def test_downloads_fail_the_test():
    with pytest.raises(AssertionError, match="look up 'weights.invalid'"):
        urllib.request.urlopen("http://weights.invalid/resnet50.pth", timeout=1)
    with pytest.raises(AssertionError, match="reach the network"), socket.socket() as sock:
        sock.settimeout(1)
        sock.connect(("192.0.2.1", 80))


def test_loopback_stays_open():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
