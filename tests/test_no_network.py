"""conftest's autouse `no_network` guard: a test cannot go out, but loopback stays open."""

from __future__ import annotations

import socket
import urllib.request

import pytest


def test_downloads_fail_the_test():
    with pytest.raises(AssertionError, match="look up 'download.pytorch.org'"):
        urllib.request.urlopen("https://download.pytorch.org/models/resnet50-0676ba61.pth", timeout=1)
    with pytest.raises(AssertionError, match="reach the network"), socket.socket() as sock:
        sock.connect(("93.184.216.34", 80))


def test_loopback_stays_open():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
