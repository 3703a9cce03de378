"""``python web/serve.py [--files DIR] [--port 8000]``: serve the web page on this machine only.

A static server (the standard library's) for ``web/``: the page, its JavaScript module and the MediaPipe Tasks
package in ``web/node_modules`` (``npm ci`` in ``web/`` puts it there; the page loads nothing from a CDN). With
``--files DIR``, the files of DIR (an export folder: ``model_float32.tflite`` ...) are served under ``/files/``,
so ``http://127.0.0.1:8000/?model=files/model_float32.tflite`` opens the page with that model.

The first line printed is the page's address (``--port 0`` picks a free port; the tests read that line).
Exit code 2 when ``web/node_modules`` or DIR is missing.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WEB = Path(__file__).resolve().parent
MEDIAPIPE_PACKAGE = WEB / "node_modules" / "@mediapipe" / "tasks-vision"
FILES_PREFIX = "/files/"


class PageHandler(SimpleHTTPRequestHandler):
    """Serves ``web/`` at ``/`` and ``files_root`` (when given) at ``/files/``; quiet unless ``verbose``."""

    # Module scripts need a JavaScript type, and WebAssembly.instantiateStreaming needs application/wasm:
    # Python's own table lacks .mjs before 3.12 and depends on the system's mime.types.
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".tflite": "application/octet-stream",
    }

    def __init__(self, *args, files_root: Path | None = None, verbose: bool = False, **kwargs):
        self.files_root = files_root
        self.verbose = verbose
        super().__init__(*args, directory=str(WEB), **kwargs)

    def translate_path(self, path: str) -> str:
        # The parent class turns the URL into a path under self.directory and drops ".." parts.
        if self.files_root is not None and path.startswith(FILES_PREFIX):
            self.directory = str(self.files_root)
            path = path[len(FILES_PREFIX) - 1 :]
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a re-exported model must not come from the cache
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        if self.verbose:
            super().log_message(format, *args)


def make_server(host: str, port: int, files_root: Path | None, verbose: bool = False) -> ThreadingHTTPServer:
    """A threading HTTP server for the page (not started); ``server.server_address[1]`` is its port."""
    handler = functools.partial(PageHandler, files_root=files_root, verbose=verbose)
    return ThreadingHTTPServer((host, port), handler)


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="web/serve.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--files", type=Path, metavar="DIR", help="folder served under /files/ (models, images)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    parser.add_argument("--port", type=_port, default=8000, help="port, 1-65535 (0: any free port)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not MEDIAPIPE_PACKAGE.is_dir():
        print(f"error: {MEDIAPIPE_PACKAGE} not found: run `npm ci` in {WEB} first", file=sys.stderr)
        return 2
    if args.files is not None and not args.files.is_dir():
        print(f"error: --files {args.files}: not a folder", file=sys.stderr)
        return 2
    try:
        server = make_server(args.host, args.port, args.files.resolve() if args.files else None, args.verbose)
    except OSError as error:  # the port is taken, or needs privileges; the host is not this machine's
        reason = error.strerror or str(error)
        print(
            f"error: cannot listen on {args.host}:{args.port}: {reason}; pick another --port", file=sys.stderr
        )
        return 2
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
