"""web/serve.py answers a busy or impossible port with one line and exit 2, not a traceback."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "web"


@pytest.fixture
def serve(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("web_serve", WEB / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "MEDIAPIPE_PACKAGE", tmp_path)  # as if `npm ci` had run
    return module


def test_a_busy_port_is_one_line(serve, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve.main(["--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port"


def test_a_port_out_of_range_is_a_usage_error(serve, capsys):
    with pytest.raises(SystemExit) as stop:
        serve.main(["--port", "70000"])
    assert stop.value.code == 2
    assert "--port: 70000 is not a port number (0-65535)" in capsys.readouterr().err
