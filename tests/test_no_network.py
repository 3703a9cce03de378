"""conftest's autouse `no_network` guard: a test cannot go out, but loopback stays open.

The guard is checked around fake socket functions, so that no test here ever calls a real one with an outside
address, even if the guard broke.
"""

from __future__ import annotations

import socket

import pytest
from retinanet_testing import network_guard


class _FakeSocket:
    family = socket.AF_INET


def test_the_guard_stops_every_host_but_loopback():
    passed_on = []
    connect, lookup = network_guard(
        lambda sock, address: passed_on.append(address), lambda host, *args, **kwargs: passed_on.append(host)
    )
    with pytest.raises(AssertionError, match="reach the network"):
        connect(_FakeSocket(), ("192.0.2.1", 80))
    with pytest.raises(AssertionError, match="look up 'weights.invalid'"):
        lookup("weights.invalid", 443)
    connect(_FakeSocket(), ("127.0.0.1", 8080))
    lookup("localhost", 80)
    assert passed_on == [("127.0.0.1", 8080), "localhost"]


def test_the_guard_is_installed_for_every_test():
    # urllib, requests and Keras' get_file all connect through these two.
    assert socket.socket.connect.__name__ == "guarded_connect"
    assert socket.getaddrinfo.__name__ == "guarded_lookup"


def test_loopback_stays_open():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
