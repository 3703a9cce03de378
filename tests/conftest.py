"""Shared fixtures. Real data comes from ../shared/datasets (read-only): tests copy what they need to tmp."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from retinanet_testing import copy_bccd_subset, make_detector_like_files, require_shared  # noqa: E402


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "", None):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may download anything (CI has no network): a connection or name lookup of any host but this
    machine's loopback fails the test. Loopback stays open for the multi-worker training test's ports."""
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise AssertionError(f"a test tried to reach the network: {address}")
        return connect(sock, address)

    def guarded_lookup(host, *args, **kwargs):
        if not _is_local(host):
            raise AssertionError(f"a test tried to look up {host!r}")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Read-only folder with ``bccd`` and ``chess640``; never write into it."""
    return require_shared()


@pytest.fixture
def bccd_subset(tmp_path):
    """Factory: ``bccd_subset(["BloodImage_00000", ...], split="train")`` -> VOC root in tmp_path."""
    return lambda ids, split="train": copy_bccd_subset(tmp_path, ids, split)


@pytest.fixture(scope="session")
def detector_like(tmp_path_factory) -> dict:
    """A tiny RetinaNet that detects things (``retinanet_testing.make_detector_like_files``): paths of its
    ``.keras`` and float32 ``.tflite`` files and of 4 synthetic images. Load a fresh copy to modify it."""
    return make_detector_like_files(tmp_path_factory.mktemp("detector_like"))
