"""The web page (``web/``) runs the file ``retinanet export`` writes with MediaPipe Tasks for Web in a real
browser, and finds what ``TFLiteDetector`` finds (issue 29).

Headless Chromium (Debian's ``/usr/bin/chromium``, or ``$CHROMIUM``) opens the page from ``web/serve.py`` on
loopback, driven by ``web/drive.mjs`` (playwright-core), which chooses each photo in the page's file input as a
user would. ``make test-web`` installs what it needs (``npm ci`` in ``web/``, Debian's chromium); without them
this test skips and says what is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from retinanet_testing import REPO, assert_rows_match_one_to_one

WEB = REPO / "web"
BCCD_IDS = ["BloodImage_00000", "BloodImage_00001"]  # 640 x 480 photos
# web/app.js draws each class in its own colour (the first three of COLOURS): rgb of #e6194b, #3cb44b, #4363d8.
BOX_COLOURS = np.array([[0xE6, 0x19, 0x4B], [0x3C, 0xB4, 0x4B], [0x43, 0x63, 0xD8]], np.uint8)


@pytest.fixture(scope="session")
def browser_tools() -> tuple[str, str]:
    """(node, chromium) executables; skips with what to run when something is missing (before the slower
    fixtures: request it first)."""
    node = shutil.which("node")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    missing = [
        what
        for what, present in [
            ("node (Node.js 20+)", node is not None),
            (
                "web/node_modules (`npm ci` in web/)",
                (WEB / "node_modules" / "@mediapipe" / "tasks-vision").is_dir(),
            ),
            (
                "web/node_modules/playwright-core (`npm ci` in web/)",
                (WEB / "node_modules" / "playwright-core").is_dir(),
            ),
            (f"{chromium} (`apt-get install chromium`, or set CHROMIUM)", os.access(chromium, os.X_OK)),
        ]
        if not present
    ]
    if missing:
        pytest.skip(f"the browser test needs {', '.join(missing)}: run `make test-web`")
    return node, chromium


def _serve(files: Path):
    """web/serve.py's server for web/ and ``files`` (under /files/) on a free loopback port, in a thread."""
    spec = importlib.util.spec_from_file_location("web_serve", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    server = serve.make_server("127.0.0.1", 0, files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _page_rows(detections: list[dict], names: list[str]) -> list[tuple]:
    """The page's rows as (class id, score, x1, y1, x2, y2); boxes under 1 px dropped as TFLiteDetector does
    (MediaPipe reports boxes whose integer width or height is 0 where the graph clipped them at the edge)."""
    return [
        (names.index(d["name"]), d["score"], d["x"], d["y"], d["x"] + d["width"], d["y"] + d["height"])
        for d in detections
        if d["width"] >= 1 and d["height"] >= 1
    ]


def _assert_same_detections(page_rows: list[tuple], detections, where: str) -> None:
    """One to one: same class, score within 1e-4, every box side within 2 px.

    MediaPipe truncates the box's origin and its size to whole pixels, each within 1 px of the float box, so
    the right and bottom sides are within 2 px.
    """
    wanted = [
        (int(c), float(s), *map(float, box))
        for c, s, box in zip(detections.classes, detections.scores, detections.boxes)
    ]
    assert_rows_match_one_to_one(page_rows, wanted, 2.0, where, ("the page", "TFLiteDetector"))


def _box_colour_pixels(image: np.ndarray) -> int:
    """Pixels of exactly one of the page's first three box colours."""
    return int((image[:, :, None, :3] == BOX_COLOURS).all(axis=-1).any(axis=-1).sum())


@pytest.mark.slow
def test_web_page_in_chromium_gives_tflite_detector_detections(
    browser_tools, detector_like, bccd_subset, tmp_path
):
    from keras_retinanet import cli
    from keras_retinanet.detectors import TFLiteDetector
    from keras_retinanet.imaging import read_image

    node, chromium = browser_tools
    export = tmp_path / "export"
    # The default 4-output file with its MediaPipe metadata, as `retinanet export` writes it.
    args = ["export", detector_like["keras"], "-o", str(export), "--no-saved-model", "--parity-images", "0"]
    assert cli.main([*args, "--tflite", "float32"]) == 0
    model = export / "model_float32.tflite"
    photos = [bccd_subset(BCCD_IDS) / "JPEGImages" / f"{name}.jpg" for name in BCCD_IDS]
    shots = tmp_path / "screenshots"
    shots.mkdir()

    server = _serve(export)
    try:
        # threshold 0: every detection the file returns (its decoder keeps scores >= 0.05), as TFLiteDetector.
        url = (
            f"http://127.0.0.1:{server.server_address[1]}/?model=files/{model.name}&threshold=0&delegate=CPU"
        )
        run = subprocess.run(
            [node, str(WEB / "drive.mjs"), "--url", url, "--out", str(shots), *map(str, photos)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "CHROMIUM": chromium},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert len(result["images"]) == len(photos), result

    detector = TFLiteDetector(model)
    names = detector.class_names
    assert names == detector_like["class_names"]
    for photo, page in zip(photos, result["images"]):
        where = f"{photo.name}: {page['status']} (browser console: {result['console']})"
        assert page["state"] == "done", where
        image = read_image(photo)
        (found,) = detector.detect([image])
        assert len(set(found.classes.tolist())) >= 2, where  # several classes, not one
        _assert_same_detections(_page_rows(page["detections"], names), found, where)

        # The screenshot shows the photo with the boxes drawn over it: the box colours, absent from the photo.
        shot = read_image(page["screenshot"])
        assert shot.shape[0] >= image.shape[0] and shot.shape[1] >= image.shape[1], where
        assert _box_colour_pixels(image) < 50, where
        assert _box_colour_pixels(shot) > 5000, where
